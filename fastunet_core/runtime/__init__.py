"""Where and how the work runs: device choice, torch.distributed set-up, progress and cancel."""
