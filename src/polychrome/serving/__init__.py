"""The REST API service (`polychrome serve`) and its job workers (`polychrome worker`)."""
