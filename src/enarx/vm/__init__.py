"""VM Keeps: the Keep image, its launch measurement, and the QEMU launcher."""
