"""The built-in Git skill (``skill.GitSkill``) and its remote helper ``git-remote-cis``
(``helper``). Kept empty so the helper imports nothing it does not need."""
