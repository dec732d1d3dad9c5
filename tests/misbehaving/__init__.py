"""A storage plugin that breaks the hook contract on request, for the plugin boundary's tests."""
