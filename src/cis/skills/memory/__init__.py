"""The built-in memory skill (``skill.MemorySkill``) and its storage (``store``)."""
