//! Pictures for the user: sample grids, denoising strips and the loss curve.
//!
//! These are the only window a learner has into a training run, so they are plain PNG files
//! that any viewer opens, written atomically (to `name.tmp`, then renamed) so that a viewer
//! that reloads while training writes never shows a half-written file. The model's tensors
//! arrive as NCHW `f32` in `[-1, 1]`; converting them here keeps this module free of the
//! tensor stack. The loss curve is drawn with a few dozen lines of pixel code and a built-in
//! 5x7 digit font rather than a plotting library: a log-scale plot with a moving average is
//! all that is needed, and it keeps the dependency tree small.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use image::{ImageFormat, Rgb, RgbImage};

/// Width in pixels of the border around and between the tiles of a grid.
pub const BORDER: usize = 2;
/// Colour of grid borders and of empty tiles.
pub const BORDER_COLOR: [u8; 3] = [255, 255, 255];

/// Maps a model value in `[-1, 1]` to a byte, clipping values outside; NaN becomes 0.
pub fn to_u8(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Tiles `n` NCHW images of `size` x `size` into rows of `cols`, with a [`BORDER`]-pixel
/// border around and between them. The last row is padded with empty tiles.
pub fn grid_image(images: &[f32], n: usize, size: usize, cols: usize) -> Result<RgbImage> {
    ensure!(
        n > 0 && size > 0,
        "a grid needs at least one image of at least one pixel"
    );
    ensure!(cols > 0, "a grid needs at least one column");
    let plane = size * size;
    ensure!(
        images.len() == n * 3 * plane,
        "expected {n} images of 3x{size}x{size} ({} values), got {} values",
        n * 3 * plane,
        images.len()
    );
    let cols = cols.min(n);
    let rows = n.div_ceil(cols);
    let width = cols * size + (cols + 1) * BORDER;
    let height = rows * size + (rows + 1) * BORDER;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(BORDER_COLOR));
    for (k, chw) in images.chunks_exact(3 * plane).enumerate() {
        let x0 = BORDER + (k % cols) * (size + BORDER);
        let y0 = BORDER + (k / cols) * (size + BORDER);
        for y in 0..size {
            for x in 0..size {
                let i = y * size + x;
                let rgb = [chw[i], chw[plane + i], chw[2 * plane + i]].map(to_u8);
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, Rgb(rgb));
            }
        }
    }
    Ok(img)
}

/// Writes `n` NCHW images in `[-1, 1]` as a PNG grid with `cols` columns.
pub fn save_grid(path: &Path, images: &[f32], n: usize, size: usize, cols: usize) -> Result<()> {
    write_png_atomic(path, &grid_image(images, n, size, cols)?)
}

/// Lays out the same `n` samples at several denoising steps: `frames[j]` holds all `n`
/// samples (NCHW) at step `j`; row `i` of the result shows sample `i`, left to right.
pub fn strip_image<F: AsRef<[f32]>>(frames: &[F], n: usize, size: usize) -> Result<RgbImage> {
    ensure!(!frames.is_empty(), "a strip needs at least one frame");
    let per_image = 3 * size * size;
    let steps = frames.len();
    let mut tiles = Vec::with_capacity(n * steps * per_image);
    for i in 0..n {
        for (j, frame) in frames.iter().enumerate() {
            let frame = frame.as_ref();
            ensure!(
                frame.len() == n * per_image,
                "frame {j}: expected {n} images of 3x{size}x{size} ({} values), got {}",
                n * per_image,
                frame.len()
            );
            tiles.extend_from_slice(&frame[i * per_image..(i + 1) * per_image]);
        }
    }
    grid_image(&tiles, n * steps, size, steps)
}

/// Writes a denoising strip (rows = samples, columns = steps) as a PNG; see [`strip_image`].
pub fn save_strip<F: AsRef<[f32]>>(path: &Path, frames: &[F], n: usize, size: usize) -> Result<()> {
    write_png_atomic(path, &strip_image(frames, n, size)?)
}

/// Writes `img` as PNG to `path.tmp`, then renames it over `path`, creating parent folders.
pub fn write_png_atomic(path: &Path, img: &RgbImage) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("could not create folder {}", parent.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = img
        .save_with_format(&tmp, ImageFormat::Png)
        .with_context(|| format!("could not write {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| {
                format!("could not rename {} to {}", tmp.display(), path.display())
            })
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

// ---------------------------------------------------------------------------------------------
// Loss curve
// ---------------------------------------------------------------------------------------------

/// Size of the loss plot in pixels.
pub const LOSS_PLOT_WIDTH: u32 = 800;
pub const LOSS_PLOT_HEIGHT: u32 = 400;

const MARGIN_LEFT: i64 = 80;
const MARGIN_RIGHT: i64 = 20;
const MARGIN_TOP: i64 = 20;
const MARGIN_BOTTOM: i64 = 40;
const FONT_SCALE: i64 = 2;

const WHITE: [u8; 3] = [255, 255, 255];
const GRID: [u8; 3] = [232, 232, 232];
const AXIS: [u8; 3] = [60, 60, 60];
const RAW: [u8; 3] = [100, 140, 210];
const AVERAGE: [u8; 3] = [205, 40, 30];

/// Draws loss against step: faint points for every raw value, a bold centered moving average,
/// a light grid and labelled ticks. The y axis is logarithmic when every loss is positive.
/// Non-finite losses are left out; an empty list gives empty axes.
pub fn loss_curve_image(losses: &[(u64, f32)]) -> RgbImage {
    let (w, h) = (LOSS_PLOT_WIDTH as i64, LOSS_PLOT_HEIGHT as i64);
    let mut img = RgbImage::from_pixel(w as u32, h as u32, Rgb(WHITE));
    let plot = Rect {
        x0: MARGIN_LEFT,
        y0: MARGIN_TOP,
        x1: w - MARGIN_RIGHT - 1,
        y1: h - MARGIN_BOTTOM - 1,
    };

    let points: Vec<(f64, f64)> = losses
        .iter()
        .filter(|(_, l)| l.is_finite())
        .map(|&(s, l)| (s as f64, l as f64))
        .collect();
    let log = !points.is_empty() && points.iter().all(|&(_, l)| l > 0.0);
    let fy = |v: f64| if log { v.log10() } else { v };

    let (mut xlo, mut xhi) = min_max(points.iter().map(|p| p.0)).unwrap_or((0.0, 1.0));
    if xhi - xlo < 2.0 {
        xlo -= 1.0;
        xhi += 1.0;
    }
    let (mut ylo, mut yhi) = min_max(points.iter().map(|p| fy(p.1))).unwrap_or((0.0, 1.0));
    let pad = if yhi > ylo { (yhi - ylo) * 0.05 } else { 0.5 };
    ylo -= pad;
    yhi += pad;

    let px = |x: f64| plot.x0 as f64 + (x - xlo) / (xhi - xlo) * (plot.x1 - plot.x0) as f64;
    let py = |y: f64| plot.y1 as f64 - (y - ylo) / (yhi - ylo) * (plot.y1 - plot.y0) as f64;

    // Grid and tick labels.
    let yticks: Vec<f64> = if log {
        log_ticks(10f64.powf(ylo), 10f64.powf(yhi))
    } else {
        linear_ticks(ylo, yhi, 0.0)
    };
    for &v in &yticks {
        let y = py(fy(v)).round() as i64;
        hline(&mut img, plot.x0, plot.x1, y, GRID);
        let label = format_tick(v);
        let tw = text_width(&label);
        draw_text(
            &mut img,
            plot.x0 - 8 - tw,
            y - 7 * FONT_SCALE / 2,
            &label,
            AXIS,
        );
    }
    for v in linear_ticks(xlo, xhi, 1.0) {
        if v < 0.0 {
            continue;
        }
        let x = px(v).round() as i64;
        vline(&mut img, x, plot.y0, plot.y1, GRID);
        let label = format_tick(v);
        let tw = text_width(&label);
        let left = (x - tw / 2).clamp(0, w - tw);
        draw_text(&mut img, left, plot.y1 + 8, &label, AXIS);
    }

    // Raw losses as faint points, then the moving average as a bold line.
    for &(s, l) in &points {
        let (x, y) = (px(s).round() as i64, py(fy(l)).round() as i64);
        blend(&mut img, &plot, x, y, RAW, 0.35);
    }
    let window = (points.len() / 50).max(1);
    let average = centered_moving_average(&points, window);
    let mut prev: Option<(f64, f64)> = None;
    for &(s, l) in &average {
        let cur = (px(s), py(fy(l)));
        thick_line(&mut img, &plot, prev.unwrap_or(cur), cur, AVERAGE);
        prev = Some(cur);
    }
    if let [(s, l)] = average[..] {
        // A lone point would be a 2-pixel speck; mark it clearly.
        let (x, y) = (px(s).round() as i64, py(fy(l)).round() as i64);
        for dy in -3..=3 {
            for dx in -3..=3 {
                if plot.contains(x + dx, y + dy) {
                    put(&mut img, x + dx, y + dy, AVERAGE);
                }
            }
        }
    }

    // Axes last so nothing covers them.
    vline(&mut img, plot.x0, plot.y0, plot.y1, AXIS);
    hline(&mut img, plot.x0, plot.x1, plot.y1, AXIS);
    img
}

/// Writes [`loss_curve_image`] as an 800x400 PNG.
pub fn save_loss_curve(path: &Path, losses: &[(u64, f32)]) -> Result<()> {
    write_png_atomic(path, &loss_curve_image(losses))
}

/// The plot area, inclusive pixel bounds.
struct Rect {
    x0: i64,
    y0: i64,
    x1: i64,
    y1: i64,
}

impl Rect {
    fn contains(&self, x: i64, y: i64) -> bool {
        (self.x0..=self.x1).contains(&x) && (self.y0..=self.y1).contains(&y)
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Mean of the raw losses within `window / 2` points on either side of each point.
fn centered_moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, l) in points {
        prefix.push(prefix.last().unwrap() + l);
    }
    let half = window / 2;
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(points.len());
            (points[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// Round steps of 1, 2 or 5 times a power of ten, about five across `[lo, hi]`, and no
/// finer than `min_step` (1 for training steps, which are whole numbers).
fn linear_ticks(lo: f64, hi: f64, min_step: f64) -> Vec<f64> {
    let raw = ((hi - lo) / 5.0).max(min_step);
    if !(raw > 0.0 && raw.is_finite()) {
        return Vec::new();
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

/// 1-2-5 ticks per decade inside `[lo, hi]`; decades only when that would be too many, and
/// linear ticks when the range is too narrow to hold two of them.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |mults: &[f64]| -> Vec<f64> {
        (k0..=k1)
            .flat_map(|k| mults.iter().map(move |m| scale_pow10(*m, k)))
            .filter(|&v| v >= lo && v <= hi)
            .collect()
    };
    let ticks = inside(&[1.0, 2.0, 5.0]);
    if ticks.len() > 8 {
        inside(&[1.0])
    } else if ticks.len() < 2 {
        linear_ticks(lo, hi, 0.0)
    } else {
        ticks
    }
}

/// `m * 10^k`, dividing for negative `k` so that e.g. `5e-2` comes out as exactly `0.05`.
fn scale_pow10(m: f64, k: i32) -> f64 {
    if k >= 0 {
        m * 10f64.powi(k)
    } else {
        m / 10f64.powi(-k)
    }
}

/// A short label: plain decimals for everyday magnitudes, `1.5e6` / `5e-4` otherwise.
fn format_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        return format!("{mantissa}e{exp}");
    }
    let decimals = (2 - a.log10().floor() as i64).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: [u8; 3]) {
    if x >= 0 && y >= 0 && x < img.width() as i64 && y < img.height() as i64 {
        img.put_pixel(x as u32, y as u32, Rgb(color));
    }
}

fn hline(img: &mut RgbImage, x0: i64, x1: i64, y: i64, color: [u8; 3]) {
    for x in x0..=x1 {
        put(img, x, y, color);
    }
}

fn vline(img: &mut RgbImage, x: i64, y0: i64, y1: i64, color: [u8; 3]) {
    for y in y0..=y1 {
        put(img, x, y, color);
    }
}

/// Mixes `color` into the pixel with weight `alpha`, so overlapping points darken.
fn blend(img: &mut RgbImage, clip: &Rect, x: i64, y: i64, color: [u8; 3], alpha: f32) {
    if !clip.contains(x, y) {
        return;
    }
    let p = img.get_pixel_mut(x as u32, y as u32);
    for (dst, &src) in p.0.iter_mut().zip(&color) {
        *dst = (*dst as f32 * (1.0 - alpha) + src as f32 * alpha).round() as u8;
    }
}

/// A 2-pixel-thick line from `a` to `b`, clipped to the plot.
fn thick_line(img: &mut RgbImage, clip: &Rect, a: (f64, f64), b: (f64, f64), color: [u8; 3]) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as i64;
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let x = (a.0 + (b.0 - a.0) * t).round() as i64;
        let y = (a.1 + (b.1 - a.1) * t).round() as i64;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            if clip.contains(x + dx, y + dy) {
                put(img, x + dx, y + dy, color);
            }
        }
    }
}

/// A 5x7 bitmap font holding just what tick labels need; each row's low 5 bits, MSB left.
fn glyph(c: char) -> Option<[u8; 7]> {
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        _ => return None,
    })
}

fn text_width(text: &str) -> i64 {
    let n = text.chars().count() as i64;
    (n * 6 - 1).max(0) * FONT_SCALE
}

/// Draws `text` with its top-left corner at `(x, y)`; characters outside the font are blank.
fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, color: [u8; 3]) {
    for (k, c) in text.chars().enumerate() {
        let Some(rows) = glyph(c) else { continue };
        let cx = x + k as i64 * 6 * FONT_SCALE;
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (0x10 >> col) != 0 {
                    for sy in 0..FONT_SCALE {
                        for sx in 0..FONT_SCALE {
                            put(
                                img,
                                cx + col * FONT_SCALE + sx,
                                y + r as i64 * FONT_SCALE + sy,
                                color,
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::TempDir;

    /// One 3xSxS image with every pixel set to `rgb`.
    fn flat(rgb: [f32; 3], size: usize) -> Vec<f32> {
        rgb.iter()
            .flat_map(|&v| std::iter::repeat_n(v, size * size))
            .collect()
    }

    #[test]
    fn value_mapping_clips_and_rounds() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.0), 128);
        assert_eq!(to_u8(-7.0), 0);
        assert_eq!(to_u8(3.0), 255);
        assert_eq!(to_u8(f32::NAN), 0);
    }

    #[test]
    fn grid_layout_and_pixels() {
        let size = 4;
        let mut images = flat([-1.0, -1.0, -1.0], size);
        images.extend(flat([1.0, 1.0, 1.0], size));
        let mut third = flat([1.0, -1.0, 0.0], size);
        third[size + 1] = -5.0; // red channel of pixel (x = 1, y = 1), clipped to black
        images.extend(third);

        let img = grid_image(&images, 3, size, 2).unwrap();
        // 2 columns, 2 rows: 2*4 + 3*2 = 14 pixels each way.
        assert_eq!(img.dimensions(), (14, 14));
        let at = |x: u32, y: u32| img.get_pixel(x, y).0;
        assert_eq!(at(0, 0), BORDER_COLOR);
        assert_eq!(at(1, 5), BORDER_COLOR);
        assert_eq!(at(2, 2), [0, 0, 0]); // first tile
        assert_eq!(at(5, 5), [0, 0, 0]);
        assert_eq!(at(6, 2), BORDER_COLOR); // gap between tiles
        assert_eq!(at(8, 2), [255, 255, 255]); // second tile
        assert_eq!(at(2, 8), [255, 0, 128]); // third tile, second row
        assert_eq!(at(3, 9), [0, 0, 128]); // its pixel (1, 1)
        assert_eq!(at(9, 9), BORDER_COLOR); // empty fourth tile
        assert_eq!(at(13, 13), BORDER_COLOR);
    }

    #[test]
    fn grid_rejects_wrong_lengths() {
        assert!(grid_image(&[0.0; 10], 1, 2, 1).is_err());
        assert!(grid_image(&[0.0; 12], 1, 2, 0).is_err());
        assert!(grid_image(&[], 0, 2, 1).is_err());
        // More columns than images shrinks to one row.
        assert_eq!(
            grid_image(&[0.0; 12], 1, 2, 8).unwrap().dimensions(),
            (6, 6)
        );
    }

    #[test]
    fn save_grid_writes_a_png_atomically() {
        let t = TempDir::new("images-grid");
        let path = t.0.join("out/samples.png");
        let images = [flat([0.5, 0.0, -0.5], 8), flat([1.0, 1.0, -1.0], 8)].concat();
        save_grid(&path, &images, 2, 8, 2).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (2 * 8 + 3 * 2, 8 + 2 * 2));
        assert_eq!(back.get_pixel(2, 2).0, [191, 128, 64]);
        assert!(!t.0.join("out/samples.png.tmp").exists());
        let names: Vec<_> = std::fs::read_dir(t.0.join("out")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn strip_puts_samples_in_rows_and_steps_in_columns() {
        let size = 2;
        // Frame j, sample i has red = value(i, j); two samples, three steps.
        let value = |i: usize, j: usize| -1.0 + 0.25 * (3 * i + j) as f32;
        let frames: Vec<Vec<f32>> = (0..3)
            .map(|j| {
                (0..2)
                    .flat_map(|i| flat([value(i, j), 0.0, 0.0], size))
                    .collect()
            })
            .collect();
        let img = strip_image(&frames, 2, size).unwrap();
        assert_eq!(img.dimensions(), (3 * 2 + 4 * 2, 2 * 2 + 3 * 2));
        for i in 0..2 {
            for j in 0..3 {
                let x = (BORDER + j * (size + BORDER)) as u32;
                let y = (BORDER + i * (size + BORDER)) as u32;
                assert_eq!(
                    img.get_pixel(x, y).0[0],
                    to_u8(value(i, j)),
                    "sample {i} step {j}"
                );
            }
        }
        let t = TempDir::new("images-strip");
        let path = t.0.join("strip.png");
        save_strip(&path, &frames, 2, size).unwrap();
        assert_eq!(image::open(&path).unwrap().to_rgb8(), img);
        assert!(strip_image(&[vec![0.0; 5]], 2, size).is_err());
    }

    fn check_plot(t: &TempDir, name: &str, losses: &[(u64, f32)]) -> RgbImage {
        let path = t.0.join(name);
        save_loss_curve(&path, losses).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory_with_format(&bytes, ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (LOSS_PLOT_WIDTH, LOSS_PLOT_HEIGHT));
        img
    }

    fn count(img: &RgbImage, color: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == color).count()
    }

    #[test]
    fn loss_curve_is_an_800x400_png_with_a_line() {
        let t = TempDir::new("images-loss");
        // A decaying, noisy loss over 5000 steps.
        let losses: Vec<(u64, f32)> = (0..5000u64)
            .map(|s| {
                let noise = ((s * 7919) % 100) as f32 / 100.0;
                (s, 0.02 + 0.9 * (-(s as f32) / 800.0).exp() * (0.5 + noise))
            })
            .collect();
        let img = check_plot(&t, "loss.png", &losses);
        assert!(
            count(&img, AVERAGE) > 700,
            "moving average should span the plot"
        );
        assert!(count(&img, AXIS) > 1000, "axes and labels");
    }

    #[test]
    fn loss_curve_edge_cases() {
        let t = TempDir::new("images-loss-edge");
        let one = check_plot(&t, "one.png", &[(10, 0.25)]);
        assert!(count(&one, AVERAGE) > 0);
        check_plot(&t, "empty.png", &[]);
        check_plot(&t, "flat.png", &[(0, 0.1), (1, 0.1), (2, 0.1)]);
        check_plot(
            &t,
            "nonfinite.png",
            &[(0, f32::NAN), (1, f32::INFINITY), (2, 0.5), (3, 0.4)],
        );
        // Zero or negative values fall back to a linear axis.
        check_plot(&t, "linear.png", &[(0, 0.0), (100, -0.5), (200, 1.0)]);
        check_plot(
            &t,
            "huge-steps.png",
            &[(1_000_000, 1e-5), (9_000_000, 2e-5)],
        );
    }

    #[test]
    fn tick_labels_use_only_drawable_characters() {
        assert_eq!(format_tick(0.05), "0.05");
        assert_eq!(format_tick(1.5), "1.5");
        assert_eq!(format_tick(250.0), "250");
        assert_eq!(format_tick(0.0005), "5e-4");
        assert_eq!(format_tick(1_500_000.0), "1.5e6");
        assert_eq!(format_tick(0.0), "0");
        for v in [1e-7, 0.002, 0.2, 3.0, 40.0, 12345.0, 1e9, -0.5] {
            assert!(format_tick(v).chars().all(|c| glyph(c).is_some()), "{v}");
        }
        assert_eq!(
            log_ticks(0.01, 1.0),
            vec![0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
        );
        assert_eq!(
            linear_ticks(0.0, 10.0, 0.0),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(linear_ticks(9.0, 11.0, 1.0), vec![9.0, 10.0, 11.0]);
    }
}
