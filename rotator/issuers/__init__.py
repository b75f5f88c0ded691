"""Key issuers: the Momento key API client and the local emulator."""
