# The reference row: changes nothing, so every other profile is compared with this
# machine as it is, measured in the same run.
SCOPE=process
DESCRIPTION="nothing changed (the reference)"
