//! rpm-ostree compatible treefiles (being written).
