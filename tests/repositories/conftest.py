from tests.support.db_fixtures import database_url, module_postgres_url  # noqa: F401
