"""HTTP: request -> use case -> reply; the only package that knows starlette, status codes and CloudEvent receipt."""
