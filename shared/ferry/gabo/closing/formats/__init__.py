"""The file formats a closed partition is written in."""
