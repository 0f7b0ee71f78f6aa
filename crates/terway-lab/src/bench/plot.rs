//! Charts with plotters: one panel per chart, stacked vertically, to an SVG or PNG file (by extension).
//! Text layout needs a TrueType font; DejaVu Sans from the system is registered at run time.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::report::Chart;

const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 460;
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Draw `charts` to `path` (`.svg` or `.png`).
pub fn draw(path: &Path, charts: &[Chart]) -> anyhow::Result<()> {
    if charts.is_empty() {
        anyhow::bail!("nothing to plot: the benchmark produced no chart data");
    }
    let size = (WIDTH, PANEL_HEIGHT * charts.len() as u32);
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => {
            // Layout measures text even in SVG, so the font is needed for both formats.
            register_font()?;
            let root = SVGBackend::new(path, size).into_drawing_area();
            panels(&root, charts)?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
        }
        Some("png") => {
            register_font()?;
            let root = BitMapBackend::new(path, size).into_drawing_area();
            panels(&root, charts)?;
            root.present()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
        }
        _ => anyhow::bail!(
            "--plot {}: the file name must end in .png or .svg",
            path.display()
        ),
    }
}

fn register_font() -> anyhow::Result<()> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("plots need the DejaVu Sans font (package fonts-dejavu-core)")
        })?;
    // plotters keeps registered fonts for the life of the process.
    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, leaked)
        .map_err(|_| anyhow::anyhow!("DejaVu Sans could not be parsed as a font"))
}

fn panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, charts: &[Chart]) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("plot: {e}"))?;
    for (area, chart) in root.split_evenly((charts.len(), 1)).iter().zip(charts) {
        match chart {
            Chart::Bars {
                title,
                y_label,
                groups,
                series,
            } => bars(area, title, y_label, groups, series),
            Chart::Lines {
                title,
                x_label,
                y_label,
                series,
            } => lines(area, title, x_label, y_label, series),
        }
        .map_err(|e| anyhow::anyhow!("plot {}: {e}", chart_title(chart)))?;
    }
    Ok(())
}

fn chart_title(c: &Chart) -> &str {
    match c {
        Chart::Bars { title, .. } | Chart::Lines { title, .. } => title,
    }
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

fn bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    // Each group takes `k` slots: one per series plus a gap.
    let k = series.len() as i32 + 1;
    let slots = groups.len() as i32 * k;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d((0..slots).into_segmented(), 0.0..top)?;
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) if i % k == (k - 1) / 2 => {
            groups.get((i / k) as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize)
        .x_label_formatter(&label)
        .y_desc(y_label)
        .draw()?;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        chart
            .draw_series(values.iter().enumerate().map(|(g, v)| {
                let x = g as i32 * k + s as i32;
                Rectangle::new(
                    [
                        (SegmentValue::Exact(x), 0.0),
                        (SegmentValue::Exact(x + 1), *v),
                    ],
                    color.filled(),
                )
            }))?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    let pts = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let x_max = pts().map(|p| p.0).fold(0.0f64, f64::max).max(1.0);
    let y_max = pts().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    for (s, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(s).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_svg_with_both_chart_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let charts = vec![
            Chart::Bars {
                title: "lat".into(),
                y_label: "ms".into(),
                groups: vec!["ADD p50".into(), "DEL p50".into()],
                series: vec![
                    ("terway".into(), vec![1.0, 2.0]),
                    ("bridge".into(), vec![3.0, 4.0]),
                ],
            },
            Chart::Lines {
                title: "pool".into(),
                x_label: "s".into(),
                y_label: "IPs".into(),
                series: vec![("idle".into(), vec![(0.0, 1.0), (1.0, 5.0)])],
            },
        ];
        draw(&path, &charts).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.contains("<svg")
                && svg.contains("terway")
                && svg.contains("ADD p50")
                && svg.contains("pool")
        );
        assert!(draw(&dir.path().join("p.txt"), &charts).is_err());
        assert!(draw(&path, &[]).is_err());
    }
}
