"""Development-only infrastructure: local AWS stand-ins (``local``) and the demo (``demo``)."""
