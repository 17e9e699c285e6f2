# Makes conf/ importable as implicit_bias.conf (see pyproject.toml) so Hydra finds it
# with config_path="pkg://implicit_bias.conf" in editable and regular installs alike.
