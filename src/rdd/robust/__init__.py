"""The robust layer (the ``robust`` config group): where the risk acts, which subgroup owns
each synthetic image, and how many images each subgroup owns."""
