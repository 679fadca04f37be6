"""ROS 2 nodes of one robot; each module has a `main()` console entry point (see setup.py)."""
