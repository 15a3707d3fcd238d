def run(stack, app, *, smoke):
    return []
