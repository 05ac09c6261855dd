"""Item text: cleaning (``clean``), text views and PLM encoding with a content-hash cache (``encode``)."""
