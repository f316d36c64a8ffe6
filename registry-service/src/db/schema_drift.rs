//! The one diesel schema (`db/schema.rs`) must match both backends' migrated databases, and a
//! server must refuse to start on a schema that is behind. (A unit test: it reads the schema,
//! which is private to the crate.)
#![allow(clippy::expect_used, clippy::unwrap_used)] // tests: a failed expectation is a failed test

use std::collections::BTreeMap;

use super::{Database, DbConnection, PoolOptions, schema};
use crate::{Config, DatabaseUrl, RegistryError};
use cpis_testkit::{
    both_backends,
    db::{Backend, TestDb},
};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};

fn config(test_db: &TestDb) -> Config {
    let signer = cpis_core::auth::DevSigner::generate("cpis", "cpis-registry").expect("key");
    Config::with(
        DatabaseUrl::parse(&test_db.url).expect("url"),
        signer.verifier().expect("verifier"),
    )
}

both_backends!(
    schema_matches_migrated_database,
    refuses_to_start_on_a_schema_behind
);

/// Column names per table as diesel's schema declares them, read from the SQL diesel generates
/// for `SELECT all_columns` (so the list cannot be kept by hand and drift unnoticed).
fn declared() -> BTreeMap<String, Vec<String>> {
    fn columns(sql: &str, table: &str) -> Vec<String> {
        let marker = format!("`{table}`.`");
        sql.match_indices(&marker)
            .filter_map(|(at, _)| {
                let rest = &sql[at + marker.len()..];
                rest.split('`').next().map(str::to_owned)
            })
            .collect()
    }
    let mut map = BTreeMap::new();
    macro_rules! declare {
        ($($table:ident),*) => {$(
            let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
                &schema::$table::table.select(schema::$table::all_columns),
            )
            .to_string();
            map.insert(stringify!($table).to_owned(), columns(&sql, stringify!($table)));
        )*};
    }
    declare!(
        local_authorities,
        child_records,
        upload_batches,
        access_events,
        notifications,
        nhs_number_status,
        registry_keys,
        holding_periods,
        upload_claims,
        batch_rejections,
        lookup_throttles,
        security_events,
        enumeration_last_seen
    );
    assert_eq!(map.keys().cloned().collect::<Vec<_>>(), {
        let mut t: Vec<String> = schema::TABLES.iter().map(|s| (*s).to_owned()).collect();
        t.sort();
        t
    });
    map
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Integer)]
    pk: i32,
}

#[derive(QueryableByName)]
struct PgColumn {
    #[diesel(sql_type = Text)]
    column_name: String,
}

fn actual(conn: &mut DbConnection, table: &str) -> Vec<String> {
    match conn {
        DbConnection::Sqlite(c) => {
            let cols: Vec<SqliteColumn> = diesel::sql_query(format!("PRAGMA table_info({table})"))
                .load(c)
                .expect("pragma");
            assert!(cols.iter().any(|c| c.pk > 0), "{table} has a primary key");
            cols.into_iter().map(|c| c.name).collect()
        }
        DbConnection::Pg(c) => diesel::sql_query(
            "SELECT column_name::text AS column_name FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind::<Text, _>(table)
        .load::<PgColumn>(c)
        .expect("information_schema")
        .into_iter()
        .map(|c| c.column_name)
        .collect(),
    }
}

async fn schema_matches_migrated_database(backend: Backend) {
    let Some(test_db) = TestDb::create(backend) else {
        return;
    };
    let cfg = config(&test_db);
    let applied = crate::migrate(&cfg).await.expect("migrate");
    assert!(!applied.is_empty());
    assert!(
        crate::migrate(&cfg).await.expect("again").is_empty(),
        "migrations are idempotent"
    );
    let db = Database::open(
        cfg.effective_database_url(),
        PoolOptions {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(5),
        },
    )
    .expect("open");
    let declared = declared();
    let found = db
        .run(move |conn| {
            Ok(schema::TABLES
                .iter()
                .map(|t| ((*t).to_owned(), actual(conn, t)))
                .collect::<BTreeMap<_, _>>())
        })
        .await
        .expect("introspect");
    assert_eq!(
        found, declared,
        "db/schema.rs drifted from the {backend:?} migrations"
    );
}

async fn refuses_to_start_on_a_schema_behind(backend: Backend) {
    let Some(test_db) = TestDb::create(backend) else {
        return;
    };
    let mut cfg = config(&test_db);
    cfg.migrate_on_start = false;
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = crate::Listeners {
        public: bind().await.expect("bind"),
        internal: bind().await.expect("bind"),
        admin: None,
    };
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        crate::serve(cfg, listeners, std::future::pending()),
    )
    .await
    .expect("serve returns instead of serving");
    match result {
        Err(e @ RegistryError::SchemaBehind { .. }) => {
            assert!(e.to_string().contains("registry-service migrate"), "{e}");
        }
        other => panic!("expected SchemaBehind, got {other:?}"),
    }
}
