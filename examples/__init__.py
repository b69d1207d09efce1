"""Example applications served by the bundled conf/pyd.conf."""
