//! The one diesel schema (`db/schema.rs`) must match both backends' migrated databases, and a
//! server must refuse to start on a schema that is behind.

use std::collections::BTreeMap;

use cpis_testkit::{
    both_backends,
    db::{Backend, TestDb},
};
use diesel::prelude::*;
use diesel::sql_types::{Integer, Text};
use registry_service::db::{DbConnection, schema};
use registry_service::{RegistryError, db::Database};

use crate::harness::{config, signer};

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
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::local_authorities::table.select(schema::local_authorities::all_columns),
    )
    .to_string();
    map.insert(
        "local_authorities".to_owned(),
        columns(&sql, "local_authorities"),
    );
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::child_records::table.select(schema::child_records::all_columns),
    )
    .to_string();
    map.insert("child_records".to_owned(), columns(&sql, "child_records"));
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::upload_batches::table.select(schema::upload_batches::all_columns),
    )
    .to_string();
    map.insert("upload_batches".to_owned(), columns(&sql, "upload_batches"));
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::access_events::table.select(schema::access_events::all_columns),
    )
    .to_string();
    map.insert("access_events".to_owned(), columns(&sql, "access_events"));
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::notifications::table.select(schema::notifications::all_columns),
    )
    .to_string();
    map.insert("notifications".to_owned(), columns(&sql, "notifications"));
    let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(
        &schema::nhs_number_status::table.select(schema::nhs_number_status::all_columns),
    )
    .to_string();
    map.insert(
        "nhs_number_status".to_owned(),
        columns(&sql, "nhs_number_status"),
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
    let cfg = config(&test_db, &signer());
    let applied = registry_service::migrate(&cfg).await.expect("migrate");
    assert!(!applied.is_empty());
    assert!(
        registry_service::migrate(&cfg)
            .await
            .expect("again")
            .is_empty(),
        "migrations are idempotent"
    );
    let db = Database::open(
        cfg.effective_database_url(),
        registry_service::db::PoolOptions {
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
    let mut cfg = config(&test_db, &signer());
    cfg.migrate_on_start = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        registry_service::serve(cfg, listener, std::future::pending()),
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
