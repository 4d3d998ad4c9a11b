"""The names a user chooses among (architectures, presets), in a module without Keras, so that
the CLI's choices and the GUI's lists need not start TensorFlow. ussl_core.models builds them."""

STUDENTS = ("lowres", "fconv", "basic_unet", "dilate_unet", "dense_unet")
EVALSEG = "evalseg"
ARCHITECTURES = STUDENTS + (EVALSEG,)
PRESET_NAMES = ("compact", "paper")
