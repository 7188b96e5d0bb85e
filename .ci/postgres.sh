#!/usr/bin/env bash
# Start a local PostgreSQL for the tests that share an Optuna study between workers (tests marked `postgres`),
# and print the URL they read from ADAMERGEX_TEST_POSTGRES_URL. Installs the server from Debian if it is missing.
set -euo pipefail
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
fi
version=$(pg_lsclusters --no-header | awk 'NR==1 {print $1}')
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $2}')
pg_ctlcluster "$version" "$cluster" start >&2 || true
for _ in $(seq 1 30); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='adamergex'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"create role adamergex login password 'adamergex'\"" >&2
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='adamergex_test'\"" | grep -q 1 ||
  su postgres -c "createdb -O adamergex adamergex_test" >&2
echo "postgresql+psycopg2://adamergex:adamergex@127.0.0.1:5432/adamergex_test"
