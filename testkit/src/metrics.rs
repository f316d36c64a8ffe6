//! Reading a server's admin port as a scraper does: plain HTTP GETs (`/metrics`, `/livez`,
//! `/readyz`), and the metrics page parsed by the Prometheus client's own text parser
//! (`tests/python/parse_metrics.py`, PyPI `prometheus-client`), so a page it refuses fails the
//! test.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// An admin answer: status code, content type and body.
#[derive(Debug)]
pub struct AdminAnswer {
    /// HTTP status.
    pub status: u16,
    /// The `content-type` header, lowercased ("" when absent).
    pub content_type: String,
    /// The body.
    pub body: String,
}

/// `GET path` on the admin port at `addr` (HTTP/1.0, so the server closes after answering).
pub async fn admin_get(addr: SocketAddr, path: &str) -> AdminAnswer {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("admin port answered within 10 s")
        .expect("admin exchange");
    let text = String::from_utf8(raw).expect("admin answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    AdminAnswer {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// One sample as the Prometheus parser read it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The sample's name (`_total`, `_bucket`, `_count`, `_sum` included).
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Clone, Debug)]
pub struct Scrape {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The raw text.
    pub text: String,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include all of `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples named `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }

    /// Asserts no label value carries a child's or a caller's secret data: no run of ten digits
    /// (an NHS number), nothing that looks like a token (`eyJ`, `Bearer`), no date, and none of
    /// `forbidden` (the names, case ids and numbers the test used).
    pub fn assert_no_child_data(&self, forbidden: &[&str]) {
        for sample in &self.samples {
            for (key, value) in &sample.labels {
                let mut run = 0;
                let longest_digits = value
                    .chars()
                    .map(|c| {
                        run = if c.is_ascii_digit() { run + 1 } else { 0 };
                        run
                    })
                    .max()
                    .unwrap_or(0);
                let looks_like_date = value.len() >= 10
                    && value.as_bytes().windows(10).any(|w| {
                        w.iter().enumerate().all(|(i, b)| {
                            if i == 4 || i == 7 {
                                *b == b'-'
                            } else {
                                b.is_ascii_digit()
                            }
                        })
                    });
                assert!(
                    longest_digits < 10
                        && !looks_like_date
                        && !value.contains("eyJ")
                        && !value.to_ascii_lowercase().contains("bearer")
                        && !forbidden.iter().any(|f| !f.is_empty() && value.contains(f)),
                    "{}{{{key}={value:?}}} carries data a label must not",
                    sample.name
                );
            }
        }
    }

    /// Whether any sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }
}

/// Polls `/metrics` at `addr` until `ready` holds for a scrape (every 50 ms, at most
/// `limit`); panics with the last page otherwise. `None` when the tools are missing (skipped).
pub async fn scrape_until(
    addr: SocketAddr,
    limit: Duration,
    ready: impl Fn(&Scrape) -> bool,
) -> Option<Scrape> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let page = scrape(addr).await?;
        if ready(&page) {
            return Some(page);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics did not reach the expected state within {limit:?}:\n{}",
            page.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Scrapes `/metrics` at `addr` and parses it with the Prometheus client's parser; `None` when
/// the tools venv is missing outside CI (the test is skipped). Panics when the page is not
/// 200, has the wrong content type, or does not parse.
pub async fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let python = crate::tools::python()?;
    let answer = admin_get(addr, "/metrics").await;
    assert_eq!(answer.status, 200, "/metrics: {}", answer.body);
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "content type {:?}",
        answer.content_type
    );
    let script = crate::tools::repo_root().join("tests/python/parse_metrics.py");
    let text = answer.body;
    let input = text.clone();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the Prometheus parser");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write the page");
        child.wait_with_output().expect("parser output")
    })
    .await
    .expect("parser task");
    assert!(
        output.status.success(),
        "the Prometheus parser refused the page: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("parser JSON");
    let samples = parsed["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|sample| Sample {
            name: sample[0].as_str().expect("name").to_owned(),
            labels: sample[1]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
            value: sample[2].as_f64().unwrap_or(f64::NAN),
        })
        .collect();
    Some(Scrape { samples, text })
}

/// Polls `path` on the admin port until it answers `want` (at most 10 s); returns the last
/// status (0: the port refused the connection, as one not yet accepting does).
pub async fn wait_status(admin: SocketAddr, path: &str, want: u16) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => admin_get(admin, path).await.status,
            Err(_) => 0,
        };
        if status == want || tokio::time::Instant::now() >= deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
