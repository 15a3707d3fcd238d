"""The product's rules: routes and jobs call these; these call the models."""
