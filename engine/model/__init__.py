"""Network factory (MONAI), checkpoints (safetensors + JSON), sliding-window inference."""
