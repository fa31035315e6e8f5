pytest_plugins = [
    "tests.fixtures.waiting",
    "tests.fixtures.processes",
    "tests.fixtures.valkey",
    "tests.fixtures.packages",
    "tests.fixtures.server",
]
