"""Parts of the ``scrap_cls`` head kept out of its main file: metrics report and the ``prepare`` command."""
