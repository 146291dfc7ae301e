"""Icons and style sheets, read with importlib.resources so they also work in a frozen bundle."""
