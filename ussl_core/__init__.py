"""ussl core: unsupervised foreground segmentation from video, without Qt.

Light modules (media, store, teacher, selection, metrics, postprocess) never import
TensorFlow so that worker processes and the CLI start fast.
"""

__version__ = "0.1.0"
