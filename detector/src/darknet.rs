//! Darknet `.cfg` parsing: text → plain data ([`NetworkSpec`]), no tensors.
//!
//! Only the sections yolov3-tiny uses are accepted; anything else is a typed error that names the
//! section and its line, so a different model fails loudly at load instead of computing nonsense.

use std::collections::BTreeMap;

/// A parse failure, located in the cfg text.
#[derive(Debug, thiserror::Error)]
#[error("yolov3-tiny.cfg line {line}, [{section}]: {problem}")]
pub struct CfgError {
    /// 1-based line of the section header or the offending key.
    pub line: usize,
    /// The section's name as written (`convolutional`, `route`, …).
    pub section: String,
    /// What is wrong, in words.
    pub problem: String,
}

/// The `[net]` section: the input the network expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// Input width in pixels (416 for yolov3-tiny).
    pub width: usize,
    /// Input height in pixels.
    pub height: usize,
    /// Input channels (3 = RGB).
    pub channels: usize,
}

/// The activation after a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0.1·x)`, darknet's `leaky`.
    Leaky,
    /// Identity (the two head convolutions).
    Linear,
}

/// A `[convolutional]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Output channels.
    pub filters: usize,
    /// Square kernel size.
    pub size: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding on each side (darknet's `pad=1` means `size / 2`).
    pub padding: usize,
    /// Whether the weights file carries batch-norm statistics for this layer.
    pub batch_normalize: bool,
    /// What follows the convolution.
    pub activation: Activation,
}

/// One `[yolo]` detection head.
#[derive(Debug, Clone, PartialEq)]
pub struct YoloSpec {
    /// Anchors (width, height) in input pixels used by this head, already selected by `mask`.
    pub anchors: Vec<(f32, f32)>,
    /// Number of classes (80 for COCO).
    pub classes: usize,
}

/// One layer of the network, in cfg order; indices refer to positions in [`NetworkSpec::layers`].
#[derive(Debug, Clone, PartialEq)]
pub enum LayerSpec {
    /// A convolution, optionally with folded batch norm.
    Conv(ConvSpec),
    /// Max-pooling. `size=2 stride=1` pads one row and column at the bottom-right (darknet).
    MaxPool {
        /// Window size.
        size: usize,
        /// Stride.
        stride: usize,
    },
    /// Channel concatenation of earlier layers' outputs (absolute indices).
    Route {
        /// One or two absolute layer indices.
        layers: Vec<usize>,
    },
    /// Nearest-neighbour upsampling.
    Upsample {
        /// Scale factor.
        stride: usize,
    },
    /// A detection head reading the previous layer's output.
    Yolo(YoloSpec),
}

/// A parsed cfg: input geometry plus layers in order.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    /// The `[net]` section.
    pub input: InputSpec,
    /// Every section after `[net]`, in order.
    pub layers: Vec<LayerSpec>,
}

/// A section's raw key/value pairs with the line each came from.
struct Section {
    name: String,
    line: usize,
    keys: BTreeMap<String, (String, usize)>,
}

impl Section {
    fn error(&self, line: usize, problem: impl Into<String>) -> CfgError {
        CfgError { line, section: self.name.clone(), problem: problem.into() }
    }

    fn raw(&self, key: &str) -> Option<(&str, usize)> {
        self.keys.get(key).map(|(v, l)| (v.as_str(), *l))
    }

    fn usize_or(&self, key: &str, default: Option<usize>) -> Result<usize, CfgError> {
        match self.raw(key) {
            Some((v, line)) => {
                v.parse().map_err(|_| self.error(line, format!("`{key}` must be a whole number, found `{v}`")))
            }
            None => default.ok_or_else(|| self.error(self.line, format!("missing key `{key}`"))),
        }
    }

    fn list<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>, CfgError> {
        let (v, line) = self.raw(key).ok_or_else(|| self.error(self.line, format!("missing key `{key}`")))?;
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| self.error(line, format!("`{key}` has a bad item `{s}`"))))
            .collect()
    }
}

/// Parses darknet cfg text into a [`NetworkSpec`].
pub fn parse(text: &str) -> Result<NetworkSpec, CfgError> {
    let sections = split_sections(text)?;
    let (net, rest) = sections.split_first().ok_or_else(|| CfgError {
        line: 1,
        section: "net".into(),
        problem: "the file has no sections; expected [net] first".into(),
    })?;
    if net.name != "net" && net.name != "network" {
        return Err(net.error(net.line, "the first section must be [net]"));
    }
    let input = InputSpec {
        width: net.usize_or("width", None)?,
        height: net.usize_or("height", None)?,
        channels: net.usize_or("channels", Some(3))?,
    };
    let mut layers = Vec::with_capacity(rest.len());
    for section in rest {
        layers.push(parse_layer(section, layers.len())?);
    }
    Ok(NetworkSpec { input, layers })
}

fn split_sections(text: &str) -> Result<Vec<Section>, CfgError> {
    let mut sections: Vec<Section> = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let line_no = index + 1;
        // Darknet allows `#` comments, also after a value (`[net] # Testing` in the stock file).
        let line = raw_line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or_else(|| CfgError {
                line: line_no,
                section: line.into(),
                problem: "a section header must end with `]`".into(),
            })?;
            sections.push(Section { name: name.trim().to_string(), line: line_no, keys: BTreeMap::new() });
            continue;
        }
        let Some(section) = sections.last_mut() else {
            return Err(CfgError { line: line_no, section: "-".into(), problem: "a key before any section".into() });
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| section.error(line_no, format!("expected `key = value`, found `{line}`")))?;
        section.keys.insert(key.trim().to_string(), (value.trim().to_string(), line_no));
    }
    Ok(sections)
}

fn parse_layer(section: &Section, index: usize) -> Result<LayerSpec, CfgError> {
    match section.name.as_str() {
        "convolutional" | "conv" => parse_conv(section).map(LayerSpec::Conv),
        "maxpool" | "max" => {
            let size = section.usize_or("size", Some(2))?;
            let stride = section.usize_or("stride", Some(size))?;
            if size == 0 || stride == 0 {
                return Err(section.error(section.line, "maxpool size and stride must be positive"));
            }
            Ok(LayerSpec::MaxPool { size, stride })
        }
        "route" => parse_route(section, index),
        "upsample" => {
            let stride = section.usize_or("stride", Some(2))?;
            if stride == 0 {
                return Err(section.error(section.line, "upsample stride must be positive"));
            }
            Ok(LayerSpec::Upsample { stride })
        }
        "yolo" => parse_yolo(section),
        other => Err(section.error(
            section.line,
            format!(
                "unsupported section [{other}] (yolov3-tiny uses net, convolutional, maxpool, route, upsample, yolo)"
            ),
        )),
    }
}

fn parse_conv(section: &Section) -> Result<ConvSpec, CfgError> {
    let size = section.usize_or("size", Some(1))?;
    let stride = section.usize_or("stride", Some(1))?;
    let filters = section.usize_or("filters", None)?;
    if size == 0 || stride == 0 || filters == 0 {
        return Err(section.error(section.line, "filters, size and stride must be positive"));
    }
    let padding = match section.usize_or("pad", Some(0))? {
        0 => section.usize_or("padding", Some(0))?,
        _ => size / 2,
    };
    let batch_normalize = section.usize_or("batch_normalize", Some(0))? != 0;
    let activation = match section.raw("activation").unwrap_or(("logistic", section.line)) {
        ("leaky", _) => Activation::Leaky,
        ("linear", _) => Activation::Linear,
        (other, line) => {
            return Err(section.error(line, format!("unsupported activation `{other}` (supported: leaky, linear)")))
        }
    };
    for key in ["groups", "dilation"] {
        if let Some((v, line)) = section.raw(key) {
            if v != "1" {
                return Err(section.error(line, format!("unsupported `{key}={v}` (only 1)")));
            }
        }
    }
    Ok(ConvSpec { filters, size, stride, padding, batch_normalize, activation })
}

fn parse_route(section: &Section, index: usize) -> Result<LayerSpec, CfgError> {
    let relative: Vec<i64> = section.list("layers")?;
    if relative.is_empty() || relative.len() > 2 {
        return Err(section.error(section.line, format!("route takes one or two layers, found {}", relative.len())));
    }
    let layers = relative
        .iter()
        .map(|&r| {
            let absolute = if r < 0 { index as i64 + r } else { r };
            if (0..index as i64).contains(&absolute) {
                Ok(absolute as usize)
            } else {
                Err(section.error(section.line, format!("route layer {r} is outside 0..{index}")))
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(LayerSpec::Route { layers })
}

fn parse_yolo(section: &Section) -> Result<LayerSpec, CfgError> {
    let mask: Vec<usize> = section.list("mask")?;
    let flat: Vec<f32> = section.list("anchors")?;
    if !flat.len().is_multiple_of(2) {
        return Err(section.error(section.line, "anchors must come in width,height pairs"));
    }
    let all: Vec<(f32, f32)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
    let anchors = mask
        .iter()
        .map(|&m| {
            all.get(m)
                .copied()
                .ok_or_else(|| section.error(section.line, format!("mask {m} has no anchor (there are {})", all.len())))
        })
        .collect::<Result<_, _>>()?;
    let classes = section.usize_or("classes", None)?;
    Ok(LayerSpec::Yolo(YoloSpec { anchors, classes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = include_str!("../../tests/fixtures/yolo/yolov3-tiny.cfg");

    #[test]
    fn parses_the_stock_yolov3_tiny_cfg() {
        let spec = parse(TINY).unwrap();
        assert_eq!(spec.input, InputSpec { width: 416, height: 416, channels: 3 });
        assert_eq!(spec.layers.len(), 24);
        let convs = spec.layers.iter().filter(|l| matches!(l, LayerSpec::Conv(_))).count();
        assert_eq!(convs, 13);
        assert_eq!(spec.layers[11], LayerSpec::MaxPool { size: 2, stride: 1 });
        assert_eq!(spec.layers[17], LayerSpec::Route { layers: vec![13] });
        assert_eq!(spec.layers[20], LayerSpec::Route { layers: vec![19, 8] });
        let LayerSpec::Conv(head) = spec.layers[15] else { panic!("layer 15 is the 13x13 head conv") };
        assert_eq!((head.filters, head.size, head.padding, head.activation), (255, 1, 0, Activation::Linear));
        assert!(!head.batch_normalize);
        let LayerSpec::Yolo(yolo) = &spec.layers[16] else { panic!("layer 16 is a yolo head") };
        assert_eq!(yolo.anchors, vec![(81.0, 82.0), (135.0, 169.0), (344.0, 319.0)]);
        assert_eq!(yolo.classes, 80);
    }

    #[test]
    fn unknown_section_names_section_and_line() {
        let err = parse("[net]\nwidth=416\nheight=416\n\n[shortcut]\nfrom=-3\n").unwrap_err();
        assert_eq!((err.line, err.section.as_str()), (5, "shortcut"));
        assert!(err.to_string().contains("unsupported section"), "{err}");
    }

    #[test]
    fn bad_values_are_located() {
        let err = parse("[net]\nwidth=416\nheight=416\n[convolutional]\nfilters=abc\n").unwrap_err();
        assert_eq!(err.line, 5);
        let err = parse("[net]\nwidth=416\nheight=416\n[convolutional]\nfilters=8\nactivation=mish\n").unwrap_err();
        assert!(err.to_string().contains("mish"), "{err}");
        let err = parse("[net]\nwidth=416\nheight=416\n[route]\nlayers=-1\n").unwrap_err();
        assert!(err.to_string().contains("outside"), "{err}");
        let err = parse("[convolutional]\nfilters=8\n").unwrap_err();
        assert!(err.to_string().contains("[net]"), "{err}");
        let err = parse("[net]\nwidth 416\n").unwrap_err();
        assert_eq!(err.line, 2);
    }
}
