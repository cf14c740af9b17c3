//! Prometheus text exposition: scraping over plain HTTP and parsing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One sample line of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricSample {
    /// Metric name.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

/// `GET http://<addr>/metrics` (plain HTTP/1.0) and parse the body.
pub fn scrape_metrics(addr: SocketAddr) -> Result<Vec<MetricSample>, String> {
    let body = http_get(addr, "/metrics")?;
    Ok(parse_metrics(&body))
}

/// A minimal HTTP/1.0 GET; returns the body of a 200 response.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))
        .ok_or_else(|| format!("malformed HTTP response from {addr}: {text:?}"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path} on {addr}: {status}"));
    }
    Ok(body.to_string())
}

/// Parses Prometheus text format sample lines (`name{k="v",...} value [ts]`);
/// comments and malformed lines are skipped.
pub fn parse_metrics(text: &str) -> Vec<MetricSample> {
    text.lines().filter_map(parse_metric_line).collect()
}

fn parse_metric_line(line: &str) -> Option<MetricSample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let mut key = String::new();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '}' => {
                    close = Some(i);
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    // Quoted value with \\, \" and \n escapes.
                    if chars.next().map(|(_, q)| q) != Some('"') {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()? {
                            (_, '"') => break,
                            (_, '\\') => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            (_, other) => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key).trim().to_string(), value));
                }
                other => key.push(other),
            }
        }
        rest = &after[close? + 1..];
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(MetricSample { name, labels, value })
}

/// The value of the sample named `name` whose labels include all of
/// `labels` (other labels may be present). With several matches, the first.
pub fn metric_value(samples: &[MetricSample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.name == name && labels.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
}

/// The sum over all series of `name` whose labels include `labels` (e.g.
/// per-worker counters), scraped from `addr`. Panics if scraping fails.
pub fn metric_sum(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape_metrics(addr)
        .unwrap_or_else(|e| panic!("scraping {addr}: {e}"))
        .iter()
        .filter(|m| m.name == name && labels.iter().all(|(k, v)| m.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|m| m.value)
        .sum()
}

/// [`metric_sum`] for a spec written as Prometheus shows it:
/// `name{k="v",...}` (the labels may be a subset of the series' labels).
pub fn metric_spec(addr: SocketAddr, spec: &str) -> f64 {
    let (name, labels) = spec.split_once('{').unwrap_or((spec, ""));
    let want: Vec<(&str, &str)> = labels
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, v.trim_matches('"')))
        .collect();
    metric_sum(addr, name, &want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lines_parse() {
        let text = "# HELP x y\n# TYPE a gauge\na 3\nb{media=\"both\",k=\"q\\\"x\"} 10 1700000000\nc{} 1.5e3\n";
        let m = parse_metrics(text);
        assert_eq!(metric_value(&m, "a", &[]), Some(3.0));
        assert_eq!(metric_value(&m, "b", &[("media", "both")]), Some(10.0));
        assert_eq!(m[1].labels[1], ("k".to_string(), "q\"x".to_string()));
        assert_eq!(metric_value(&m, "c", &[]), Some(1500.0));
        assert_eq!(metric_value(&m, "b", &[("media", "audio")]), None);
    }
}
