"""tap-kustomer: a Singer tap for Kustomer."""
