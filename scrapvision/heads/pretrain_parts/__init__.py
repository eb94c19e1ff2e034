"""Parts of the ``pretrain`` head kept out of its main file."""
