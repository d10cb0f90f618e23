//! `vigil monitor`: attach a reference profile built from training data, and
//! read an endpoint's drift, from a running server.

use crate::client::{Client, ClientArgs};
use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use std::path::{Path, PathBuf};
use vigil_monitor::drift::{Column, DriftSettings, Method as Test, PREDICTION_PREFIX, ReferenceProfile};

#[derive(Subcommand, Debug)]
pub enum MonitorCommand {
    /// Profile training data (CSV with a header row, or Parquet) and attach it to a model
    /// version as its reference: served requests are counted against it.
    Baseline {
        data: PathBuf,
        /// The model to attach the profile to (not with --out).
        #[arg(long, default_value = "")]
        model: String,
        /// A version number or alias (not with --out).
        #[arg(long, default_value = "")]
        version: String,
        /// Columns to treat as categories even if they hold numbers.
        #[arg(long, value_delimiter = ',')]
        categorical: Vec<String>,
        /// A test or threshold other than the default for a feature:
        /// `age=psi:0.2`, `region=chi_square` (tests: kolmogorov_smirnov,
        /// chi_square, wasserstein_normed, jensen_shannon, psi).
        #[arg(long, value_delimiter = ',', value_name = "FEATURE=TEST[:THRESHOLD]")]
        drift: Vec<String>,
        /// The dataset drifts when at least this share of its input features
        /// do (default 0.5).
        #[arg(long)]
        dataset_drift_share: Option<f64>,
        /// Write the profile here instead of attaching it (to ship it as
        /// `profile.json` in a model package).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Only these columns (default: the features the version's spec
        /// names, else every column). Columns named `prediction.label`,
        /// `prediction.<label>` (a label's probability) or
        /// `prediction.<name>` (a regression output) hold the model's outputs
        /// on this data and are always kept: their drift is prediction drift.
        #[arg(long, value_delimiter = ',')]
        columns: Vec<String>,
    },
    /// Write an endpoint's drift, data quality and model quality as one
    /// self-contained HTML file, with a plot per feature.
    Report {
        endpoint: String,
        /// RFC 3339, inclusive (default: an hour ago).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339, exclusive (default: now).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Print an endpoint's drift, data quality and model quality per version.
    Show {
        endpoint: String,
        /// RFC 3339, inclusive (default: an hour ago).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339, exclusive (default: now).
        #[arg(long)]
        until: Option<String>,
    },
}

pub async fn monitor(args: &ClientArgs, command: MonitorCommand) -> anyhow::Result<()> {
    let c = Client::new(args)?;
    match command {
        MonitorCommand::Baseline {
            data,
            model,
            version,
            categorical,
            mut columns,
            drift,
            dataset_drift_share,
            out,
        } => {
            let path = format!("/api/v1/models/{model}/versions/{version}");
            let settings = drift_settings(&drift)?;
            if let Some(out) = out {
                let mut profile = profile_file(&data, &categorical, &[], &columns)?;
                profile.settings = settings;
                profile.dataset_drift_share = dataset_drift_share;
                profile.validate().map_err(|e| anyhow::anyhow!("--drift: {e}"))?;
                std::fs::write(&out, serde_json::to_vec(&profile)?)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                return c.print(
                    &serde_json::json!({ "written": out.display().to_string(), "features": profile.features.len() }),
                    |v| {
                        format!(
                            "wrote a profile of {} features to {}",
                            v["features"],
                            v["written"].as_str().unwrap_or_default()
                        )
                    },
                );
            }
            if model.is_empty() || version.is_empty() {
                anyhow::bail!("give --model and --version to attach the profile (or --out FILE to write it)");
            }
            // The spec's types decide where the data alone could mislead: a
            // categorical feature of integer codes, a boolean written 0/1.
            let record = c.send(c.request(Method::GET, &path)).await?;
            let spec = spec_features(record["manifest"].as_str().unwrap_or_default());
            if columns.is_empty() {
                columns = spec.iter().filter(|(_, kind)| kind != "text").map(|(name, _)| name.clone()).collect();
            }
            let of = |kind: &str| spec.iter().filter(|(_, k)| k == kind).map(|(n, _)| n.clone()).collect::<Vec<_>>();
            let mut categorical = categorical;
            categorical.extend(of("categorical"));
            let mut profile = profile_file(&data, &categorical, &of("boolean"), &columns)?;
            profile.settings = settings;
            profile.dataset_drift_share = dataset_drift_share;
            let body = serde_json::to_value(&profile)?;
            let answer = c.send_json(Method::PUT, &format!("{path}/profile"), &body).await?;
            c.print(&answer, |v| {
                format!(
                    "attached a reference profile of {} features ({} rows) to {} version {}",
                    v["features"],
                    v["rows"],
                    v["model"].as_str().unwrap_or_default(),
                    v["version"]
                )
            })?;
        }
        MonitorCommand::Report { endpoint, since, until, out } => {
            let query: Vec<(&str, String)> =
                [("since", since), ("until", until)].into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            let path = format!("/api/v1/endpoints/{endpoint}/monitor");
            let answer = c.send(c.request(Method::GET, &path).query(&query)).await?;
            std::fs::write(&out, crate::monitor_report::render(&answer))
                .with_context(|| format!("cannot write {}", out.display()))?;
            c.print(&serde_json::json!({ "written": out.display().to_string() }), |v| {
                format!("wrote {}", v["written"].as_str().unwrap_or_default())
            })?;
        }
        MonitorCommand::Show { endpoint, since, until } => {
            let query: Vec<(&str, String)> =
                [("since", since), ("until", until)].into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
            let path = format!("/api/v1/endpoints/{endpoint}/monitor");
            let answer = c.send(c.request(Method::GET, &path).query(&query)).await?;
            c.print(&answer, drift_table)?;
        }
    }
    Ok(())
}

/// Each version's features with their test, score and data quality.
fn drift_table(v: &serde_json::Value) -> String {
    use crate::monitor_report::{number, percent};
    let mut rows = Vec::new();
    let mut summary = String::new();
    for version in v["versions"].as_array().into_iter().flatten() {
        let drift = &version["drift"];
        summary.push_str(&format!(
            "version {}: {} windows, {} of its features drifted{}\n",
            version["version"].as_str().unwrap_or_default(),
            version["windows"],
            drift["drifted_features"],
            if drift["dataset_drift"] == true { " (dataset drift)" } else { "" }
        ));
        for f in drift["features"].as_array().into_iter().flatten() {
            rows.push(vec![
                version["version"].as_str().unwrap_or_default().to_owned(),
                f["feature"].as_str().unwrap_or_default().to_owned(),
                f["method"].as_str().unwrap_or_default().to_owned(),
                number(&f["score"]),
                number(&f["threshold"]),
                if f["drifted"] == true { "DRIFT".to_owned() } else { "ok".to_owned() },
                f["count"].to_string(),
                percent(&f["missing_share"]),
                percent(&f["out_of_range_share"]),
                percent(&f["unseen_share"]),
            ]);
        }
    }
    if rows.is_empty() {
        return "no windows in that range (is a reference profile attached, and has the endpoint served?)".to_owned();
    }
    let headers =
        ["version", "feature", "test", "score", "threshold", "verdict", "values", "missing", "out of range", "unseen"];
    format!("{summary}{}", crate::client::table(&headers, rows))
}

/// `FEATURE=TEST[:THRESHOLD]` flags as profile settings.
fn drift_settings(flags: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, DriftSettings>> {
    flags
        .iter()
        .map(|flag| {
            let (feature, test) = flag.split_once('=').context(format!("--drift {flag}: FEATURE=TEST[:THRESHOLD]"))?;
            let (method, threshold) = match test.split_once(':') {
                Some((m, t)) => {
                    (m, Some(t.parse::<f64>().context(format!("--drift {flag}: the threshold is a number"))?))
                }
                None => (test, None),
            };
            let method: Test = serde_json::from_value(serde_json::Value::from(method))
                .map_err(|_| anyhow::anyhow!("--drift {flag}: unknown test '{method}'"))?;
            Ok((feature.to_owned(), DriftSettings { method: Some(method), threshold }))
        })
        .collect()
}

/// The features a version's manifest (`vigil.toml`) declares, if any: each
/// name with its type (`numerical`, `categorical`, `boolean`, `text`).
fn spec_features(manifest: &str) -> Vec<(String, String)> {
    let Ok(doc) = manifest.parse::<toml::Table>() else { return Vec::new() };
    let text = |f: &toml::Value, key: &str| f.get(key).and_then(toml::Value::as_str).map(str::to_owned);
    doc.get("features")
        .and_then(toml::Value::as_array)
        .map(|features| features.iter().filter_map(|f| Some((text(f, "name")?, text(f, "type")?))).collect())
        .unwrap_or_default()
}

/// Cells that mean "no value".
const MISSING: [&str; 7] = ["", "NA", "NaN", "nan", "null", "None", "N/A"];

/// Profiles a CSV (with a header row) or Parquet file (by its `.parquet`
/// extension): a column is numerical when every value present reads as a
/// number (and it is not listed in `categorical`), else categorical;
/// `true`/`false` in any case become `true`/`false`, as served booleans are.
pub fn profile_file(
    path: &Path,
    categorical: &[String],
    booleans: &[String],
    only: &[String],
) -> anyhow::Result<ReferenceProfile> {
    let parquet = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    let (headers, rows) = if parquet { read_parquet(path)? } else { read_csv(path)? };
    if let Some(missing) = only.iter().find(|n| !headers.contains(n)) {
        anyhow::bail!("{} has no column '{missing}' (it has {headers:?})", path.display());
    }
    // The model's outputs on the training data (`prediction.…`) are always kept.
    let keep: Vec<usize> = (0..headers.len())
        .filter(|&i| only.is_empty() || only.contains(&headers[i]) || headers[i].starts_with(PREDICTION_PREFIX))
        .collect();
    let columns = keep
        .iter()
        .map(|&i| {
            let name = headers[i].clone();
            let values: Vec<Option<String>> = rows.iter().map(|r| r.get(i).cloned().flatten()).collect();
            let numbers: Option<Vec<Option<f64>>> =
                values.iter().map(|v| v.as_ref().map_or(Some(None), |v| v.parse::<f64>().ok().map(Some))).collect();
            let column = match numbers {
                Some(n) if !categorical.contains(&name) && !booleans.contains(&name) => Column::Numbers(n),
                _ => {
                    // Booleans are counted as served booleans are: `true`/`false`
                    // (from 1/0 too, for a column the spec says is boolean).
                    let literal = |v: &str| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false");
                    let boolean = booleans.contains(&name) || values.iter().flatten().all(|v| literal(v));
                    let normal = |v: String| match v.to_ascii_lowercase().as_str() {
                        "true" | "1" if boolean => "true".to_owned(),
                        "false" | "0" if boolean => "false".to_owned(),
                        _ => v,
                    };
                    Column::Categories(values.into_iter().map(|v| v.map(normal)).collect())
                }
            };
            (name, column)
        })
        .collect();
    ReferenceProfile::build(columns).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A table's column names and its rows of cells (`None`: missing).
type Table = (Vec<String>, Vec<Vec<Option<String>>>);

fn read_csv(path: &Path) -> anyhow::Result<Table> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let headers: Vec<String> = reader.headers()?.iter().map(str::to_owned).collect();
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: record {}", path.display(), line + 1))?;
        rows.push(record.iter().map(|c| Some(c.trim()).filter(|v| !MISSING.contains(v)).map(str::to_owned)).collect());
    }
    Ok((headers, rows))
}

/// Reads a Parquet file's flat columns row by row (nested columns by their
/// dotted path); nulls and NaN are missing.
fn read_parquet(path: &Path) -> anyhow::Result<Table> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let reader =
        SerializedFileReader::new(file).with_context(|| format!("{} is not a Parquet file", path.display()))?;
    let headers: Vec<String> =
        reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.path().string()).collect();
    let cell = |field: &Field| -> Option<String> {
        match field {
            Field::Null => None,
            Field::Bool(b) => Some(b.to_string()),
            Field::Str(s) => Some(s.clone()).filter(|v| !MISSING.contains(&v.as_str())),
            Field::Float(x) => Some(x.to_string()).filter(|_| !x.is_nan()),
            Field::Double(x) => Some(x.to_string()).filter(|_| !x.is_nan()),
            other => Some(other.to_string()),
        }
    };
    let mut rows = Vec::new();
    for (n, row) in reader.get_row_iter(None)?.enumerate() {
        let row = row.with_context(|| format!("{}: row {}", path.display(), n + 1))?;
        let mut cells = vec![None; headers.len()];
        for (name, field) in row.get_column_iter() {
            if let Some(i) = headers.iter().position(|h| h == name) {
                cells[i] = cell(field);
            }
        }
        rows.push(cells);
    }
    Ok((headers, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_monitor::drift::ProfileKind;

    #[test]
    fn columns_are_typed_and_missing_cells_counted() {
        let dir = std::env::temp_dir().join(format!("vigil-csv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("train.csv");
        let csv =
            "age,plan,tier,member,label,prediction.label\n30,pro,1,True,0,a\n,basic,2,False,1,b\n41,pro,NA,true,1,a\n";
        std::fs::write(&path, csv).unwrap();
        let p = profile_file(&path, &["tier".into()], &[], &[]).unwrap();
        assert_eq!(p.rows, 3);
        let age = p.feature("age").unwrap();
        assert_eq!((age.count, age.missing), (2, 1));
        assert!(matches!(age.kind, ProfileKind::Numerical { .. }));
        let ProfileKind::Categorical { categories, .. } = &p.feature("member").unwrap().kind else { panic!() };
        assert_eq!(categories, &["true".to_owned(), "false".to_owned()], "most frequent first");
        assert!(matches!(p.feature("tier").unwrap().kind, ProfileKind::Categorical { .. }));
        // A boolean written 1/0, as the spec says it is boolean.
        let p = profile_file(&path, &[], &["label".into()], &[]).unwrap();
        let ProfileKind::Categorical { categories, .. } = &p.feature("label").unwrap().kind else { panic!() };
        assert_eq!(categories, &["true".to_owned(), "false".to_owned()]);
        let only = profile_file(&path, &[], &[], &["age".into()]).unwrap();
        let names: Vec<&str> = only.features.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["age", "prediction.label"], "outputs are always kept");
        assert!(profile_file(&path, &[], &[], &["nope".into()]).unwrap_err().to_string().contains("no column 'nope'"));
        std::fs::write(&path, "a,b\n1,2\n3\n").unwrap();
        assert!(profile_file(&path, &[], &[], &[]).is_err(), "a short record is an error, not a crash");
        assert_eq!(
            spec_features("[[features]]\nname = \"age\"\ntype = \"numerical\"\n"),
            [("age".into(), "numerical".into())]
        );
        let s = drift_settings(&["age=psi:0.2".into(), "plan=chi_square".into()]).unwrap();
        assert_eq!(s["age"], DriftSettings { method: Some(Test::Psi), threshold: Some(0.2) });
        assert_eq!(s["plan"].threshold, None);
        for bad in ["age", "age=nope", "age=psi:x"] {
            assert!(drift_settings(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(spec_features("not toml [").is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parquet_profiles_like_the_same_csv() {
        use parquet::basic::Compression;
        use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("vigil-parquet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let csv = dir.join("train.csv");
        std::fs::write(&csv, "age,plan,member\n30,pro,true\n,basic,false\n41,pro,true\n").unwrap();
        let parquet = dir.join("train.parquet");
        let schema = parse_message_type(
            "message train { optional double age; optional binary plan (UTF8); required boolean member; }",
        )
        .unwrap();
        let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let file = std::fs::File::create(&parquet).unwrap();
        let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<DoubleType>().write_batch(&[30.0, 41.0], Some(&[1, 0, 1]), None).unwrap();
        c.close().unwrap();
        let mut c = group.next_column().unwrap().unwrap();
        let plans = ["pro", "basic", "pro"].map(ByteArray::from);
        c.typed::<ByteArrayType>().write_batch(&plans, Some(&[1, 1, 1]), None).unwrap();
        c.close().unwrap();
        let mut c = group.next_column().unwrap().unwrap();
        c.typed::<BoolType>().write_batch(&[true, false, true], None, None).unwrap();
        c.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
        let from_parquet = profile_file(&parquet, &[], &[], &[]).unwrap();
        assert_eq!(from_parquet, profile_file(&csv, &[], &[], &[]).unwrap());
        assert_eq!(from_parquet.feature("age").unwrap().missing, 1);
        // Not Parquet at all: a clear error.
        std::fs::write(&parquet, b"not parquet").unwrap();
        assert!(profile_file(&parquet, &[], &[], &[]).unwrap_err().to_string().contains("is not a Parquet file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
