"""Keras models: the image CNN (cnn), the recommender (mf) and the image generator (gan)."""

import os

# TensorFlow's C++ start-up chatter (oneDNN notices, CPU feature lists) says nothing a user can act on.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
