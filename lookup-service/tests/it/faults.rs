//! The database's bad days, for real: a private PostgreSQL cluster under the registry is stopped,
//! hung (SIGSTOP) and brought back while clinicians look children up. During the outage every
//! lookup is answered (UNAVAILABLE or DEADLINE_EXCEEDED) inside its deadline and health says
//! NOT_SERVING; lookups succeed again within 5 s of the database's return. A registry started
//! before its database waits as NOT_SERVING instead of exiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpis_proto::cpis::lookup::v1::lookup_service_client::LookupServiceClient;
use cpis_testkit::pg_cluster::PgCluster;
use cpis_testkit::server::health;
use cpis_testkit::{Stack, both_backends, db::Backend};
use registry_service::{Clock, DatabaseUrl};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::harness::{NHS_A, cpp, ed_clinician, noon, unscheduled_lookup};

/// How long a clinician's EPR waits for one lookup in these tests.
const DEADLINE: Duration = Duration::from_millis(1500);

/// Runs a blocking cluster operation off the runtime's workers (the servers share them).
async fn on_cluster(cluster: &Arc<PgCluster>, op: fn(&PgCluster)) {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || op(&cluster))
        .await
        .expect("cluster operation");
}

/// A registry on a database of `cluster`, a lookup service in front, one council and one child.
async fn stack_on(cluster: &PgCluster) -> Stack {
    let url = DatabaseUrl::parse(&cluster.create_database("cpis")).expect("url");
    let stack = Stack::builder(Backend::Postgres)
        .clock(Clock::fixed(noon(2026, 6, 15)))
        .registry(move |config| {
            config.database_url = Some(url);
            config.db_acquire_timeout = Duration::from_secs(1);
        })
        .with_lookup()
        .start()
        .await
        .expect("stack");
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    stack
}

/// One lookup with the test deadline: Ok(number of alerts) or the status code; panics if the
/// answer came later than the deadline allows.
async fn timed_lookup(stack: &Stack) -> Result<usize, Code> {
    let token = stack.nhs_token(&ed_clinician());
    let mut request = unscheduled_lookup(NHS_A, &token);
    request.set_timeout(DEADLINE);
    let started = Instant::now();
    let answer = LookupServiceClient::new(stack.lookup_server().channel().await)
        .lookup_child(request)
        .await;
    let took = started.elapsed();
    assert!(
        took < DEADLINE + Duration::from_millis(300),
        "answered after {took:?}, past the deadline"
    );
    answer
        .map(|a| a.into_inner().alerts.len())
        .map_err(|status| status.code())
}

/// Polls until health is `wanted`; how long it took. Panics after `limit`.
async fn until_health(stack: &Stack, wanted: ServingStatus, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if health(stack.registry.channel().await, "").await == Some(wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "health not {wanted:?} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Looks up until one succeeds; how long it took. Panics after `limit`.
async fn until_lookups_work(stack: &Stack, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if timed_lookup(stack).await == Ok(1) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "lookups not back within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_heals_within_seconds() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let stack = stack_on(&cluster).await;
    // Warm the pool: several connections at once, all of which the restart will kill.
    let warm = futures::future::join_all((0..8).map(|_| timed_lookup(&stack))).await;
    assert!(warm.iter().all(|a| *a == Ok(1)), "{warm:?}");

    on_cluster(&cluster, PgCluster::stop).await;
    for _ in 0..3 {
        let refused = timed_lookup(&stack).await.expect_err("database down");
        assert!(
            matches!(refused, Code::Unavailable | Code::DeadlineExceeded),
            "{refused:?}"
        );
    }
    let noticed = until_health(&stack, ServingStatus::NotServing, Duration::from_secs(5)).await;
    eprintln!("health NOT_SERVING {noticed:?} after the stop was noticed by lookups");

    on_cluster(&cluster, PgCluster::start_again).await;
    let back = until_lookups_work(&stack, Duration::from_secs(5)).await;
    eprintln!("lookups succeeded again {back:?} after the database's return");
    until_health(&stack, ServingStatus::Serving, Duration::from_secs(5)).await;
    // Every pooled connection the restart killed is gone: a concurrent burst all succeeds.
    let burst = futures::future::join_all((0..16).map(|_| timed_lookup(&stack))).await;
    assert!(burst.iter().all(|a| *a == Ok(1)), "{burst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_database_answers_inside_the_deadline() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let stack = stack_on(&cluster).await;
    assert_eq!(timed_lookup(&stack).await, Ok(1));

    on_cluster(&cluster, PgCluster::pause).await;
    for _ in 0..3 {
        let refused = timed_lookup(&stack).await.expect_err("database hung");
        assert!(
            matches!(refused, Code::Unavailable | Code::DeadlineExceeded),
            "{refused:?}"
        );
    }
    until_health(&stack, ServingStatus::NotServing, Duration::from_secs(8)).await;

    on_cluster(&cluster, PgCluster::resume).await;
    let back = until_lookups_work(&stack, Duration::from_secs(5)).await;
    eprintln!("lookups succeeded again {back:?} after the database resumed");
    until_health(&stack, ServingStatus::Serving, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_started_before_its_database_waits() {
    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let url = cluster.create_database("cpis");
    on_cluster(&cluster, PgCluster::stop).await;

    let signer = cpis_testkit::stack::council_signer();
    let mut config = registry_service::Config::with(
        DatabaseUrl::parse(&url).expect("url"),
        signer.verifier().expect("verifier"),
    );
    config.db_acquire_timeout = Duration::from_secs(1);
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let listeners = registry_service::Listeners {
        public: bind().await.expect("bind"),
        internal: bind().await.expect("bind"),
        admin: None,
    };
    let addr = listeners.public.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(registry_service::serve(config, listeners, async {
        let _ = stopped.await;
    }));
    let registry = cpis_testkit::TestServer::attach(&format!("http://{addr}"));

    // Longer than the 5 s after which it used to give up: still up, still NOT_SERVING.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert!(
            !server.is_finished(),
            "the registry exited without its database"
        );
        assert_eq!(
            health(registry.channel().await, "").await,
            Some(ServingStatus::NotServing)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    on_cluster(&cluster, PgCluster::start_again).await;
    registry.wait_serving("", Duration::from_secs(10)).await;
    let _ = stop.send(());
    server
        .await
        .expect("server task")
        .expect("a clean stop after serving");
}

both_backends!(a_deadline_sweep_never_says_not_recorded_of_a_recorded_access);

/// Lookups under deadlines of 5 to 120 ms (the tight end is where answers and commits race; the
/// wide end lets a debug build's token check finish), several at once: every lookup answered
/// "not recorded" is absent from the access history, every success is present, and "may have
/// been recorded" (or the caller's own deadline cutting the call off) may go either way.
async fn a_deadline_sweep_never_says_not_recorded_of_a_recorded_access(backend: Backend) {
    use cpis_core::status::reason_of;

    let Some(stack) = crate::harness::start(backend).await else {
        return;
    };
    stack.register_council("AB1").await;
    stack.put("AB1", cpp(NHS_A)).await;
    let token = stack.nhs_token(&ed_clinician());
    const PER_WORKER: usize = 60;
    let workers = (0..4).map(|worker| {
        let (stack, token) = (&stack, token.clone());
        async move {
            let mut client = LookupServiceClient::new(stack.lookup_server().channel().await);
            let mut outcomes = Vec::new();
            for i in 0..PER_WORKER {
                let id = format!("sweep-{worker}-{i}");
                let deadline = Duration::from_millis(5 + u64::try_from(i % 24).unwrap_or(0) * 5);
                let mut request = unscheduled_lookup(NHS_A, &token);
                request.set_timeout(deadline);
                request
                    .metadata_mut()
                    .insert("x-request-id", id.parse().expect("ascii"));
                let outcome = client.lookup_child(request).await;
                outcomes.push((id, outcome.map(|_| ()).map_err(|s| reason_of(&s))));
            }
            outcomes
        }
    });
    let outcomes: Vec<_> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();

    let tally = stack.tally_sweep("AB1", NHS_A, &outcomes).await;
    tally.assert_honest(&format!("{backend:?} deadline sweep"));
}

/// Runs `sql` on the cluster's maintenance database.
fn cluster_sql(cluster: &PgCluster, sql: &str) {
    use diesel::{Connection as _, RunQueryDsl as _};
    let mut conn = diesel::pg::PgConnection::establish(&cluster.url()).expect("connect");
    diesel::sql_query(sql).execute(&mut conn).expect(sql);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_outlives_the_deadline_is_not_called_unrecorded() {
    use cpis_core::status::reason_of;
    use cpis_proto::cpis::common::v1::ErrorReason;

    let Some(cluster) = PgCluster::start() else {
        return;
    };
    let cluster = Arc::new(cluster);
    let stack = stack_on(&cluster).await;
    assert_eq!(timed_lookup(&stack).await, Ok(1));
    let before = stack.access_events("AB1", NHS_A).await;

    // A synchronous standby that has gone away: every commit waits for it, after the
    // transaction has done all its work (as when a CloudNativePG replica is lost).
    on_cluster(&cluster, |c| {
        cluster_sql(c, "ALTER SYSTEM SET synchronous_standby_names = 'gone'");
        cluster_sql(c, "SELECT pg_reload_conf()");
    })
    .await;
    let token = stack.nhs_token(&ed_clinician());
    let mut request = unscheduled_lookup(NHS_A, &token);
    request.set_timeout(Duration::from_secs(1));
    let answer = LookupServiceClient::new(stack.lookup_server().channel().await)
        .lookup_child(request)
        .await
        .expect_err("the commit cannot finish in time");

    // The standby comes back: the waiting commit completes, and the access is on record.
    on_cluster(&cluster, |c| {
        cluster_sql(c, "ALTER SYSTEM RESET synchronous_standby_names");
        cluster_sql(c, "SELECT pg_reload_conf()");
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.access_events("AB1", NHS_A).await == before {
        assert!(Instant::now() < deadline, "the delayed commit never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        reason_of(&answer),
        Some(ErrorReason::AccessMayBeRecorded),
        "the clinician was told something other than 'may have been recorded' about an access \
         that was recorded: {answer:?}"
    );
}
