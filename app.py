from bridge import create_app
app = create_app()
