"""Dataset curation: `instructune build` turns labelled data into instruction rows."""
