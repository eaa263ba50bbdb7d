//! Reading the text [`Prometheus::render`](crate::prometheus::Prometheus::render) writes as a
//! scraper reads it (feature `testing`): for the tests of the crates that record isp-kit's
//! metrics, so that each asserts on series by name and labels the same way.
//!
//! ```
//! use cluster_metrics::scrape::Scraped;
//!
//! let text = "# TYPE http_status_code_count counter\nhttp_status_code_count{code=\"200\"} 3\n";
//! let scraped = Scraped::parse(text);
//! assert_eq!(scraped.value("http_status_code_count", &[("code", "200")]), Some(3.0));
//! assert_eq!(scraped.value("http_status_code_count", &[("code", "500")]), None);
//! ```

use prometheus_parse::{Sample, Scrape, Value};

/// A rendered exposition, parsed, with the text kept for failure messages.
#[derive(Debug)]
pub struct Scraped {
    /// The parsed samples.
    pub scrape: Scrape,
    /// The text as rendered.
    pub text: String,
}

impl Scraped {
    /// Parses `text` (Prometheus text format).
    ///
    /// # Panics
    /// When the text does not parse: a test helper.
    #[must_use]
    pub fn parse(text: impl Into<String>) -> Self {
        let text = text.into();
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("not the Prometheus text format ({e}):\n{text}"));
        Self { scrape, text }
    }

    /// The sample named `name` whose labels are exactly `labels`.
    #[must_use]
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<&Sample> {
        self.scrape.samples.iter().find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
    }

    /// The value of a counter, gauge or untyped sample.
    ///
    /// # Panics
    /// When the sample is a summary or histogram.
    #[must_use]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: not a single value: {other:?}"),
        })
    }

    /// The quantiles (not their values) of a summary's series.
    ///
    /// # Panics
    /// When there is no such series, or it is not a summary.
    #[must_use]
    pub fn quantiles(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        let sample = self
            .find(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", self.text));
        let Value::Summary(qs) = &sample.value else {
            panic!("{name}: not a summary: {:?}", sample.value)
        };
        qs.iter().map(|q| q.quantile).collect()
    }
}
