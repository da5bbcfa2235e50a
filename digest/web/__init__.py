"""The small web side: rating pages behind signed links, each profile's archive and Atom feed behind capability
URLs, and a health page. It only calls into the store and the ratings, like the CLI."""
