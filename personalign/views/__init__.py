"""Views: a record rendered for a model (the templates, the user profile, the view builders)."""
