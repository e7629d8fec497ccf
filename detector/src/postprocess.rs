//! Pure post-processing: raw head values → scored boxes → per-class greedy NMS.
//!
//! No tensors and no I/O, so every rule is unit-tested on synthetic boxes. NaN-safe: a
//! non-finite score or box is dropped, and sorting uses a total order, so no input panics.

/// An axis-aligned box in network-input pixels (0..416 for yolov3-tiny), corners inclusive-exclusive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxF {
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl BoxF {
    fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    fn is_finite(&self) -> bool {
        [self.x1, self.y1, self.x2, self.y2].iter().all(|v| v.is_finite())
    }
}

/// One scored box before mapping back to the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Index into the class names.
    pub class: usize,
    /// objectness × class probability.
    pub score: f32,
    /// The box in network-input pixels.
    pub bbox: BoxF,
}

/// How to read one head: its grid, anchors and classes, and the network input size.
#[derive(Debug, Clone, Copy)]
pub struct HeadLayout<'a> {
    /// Grid rows.
    pub rows: usize,
    /// Grid columns.
    pub cols: usize,
    /// Anchor (width, height) in input pixels, one per box slot of each cell.
    pub anchors: &'a [(f32, f32)],
    /// Number of classes.
    pub classes: usize,
    /// Network input (width, height) in pixels.
    pub input: (usize, usize),
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Decodes one image's raw head output (`anchors·(5 + classes) × rows × cols`, channel
/// `a·(5+C) + k`) into candidates with `score ≥ threshold`. One class per box: the argmax of
/// objectness × class probability, as the reference (OpenCV, darknet) does.
pub fn decode_head(raw: &[f32], layout: HeadLayout, threshold: f32) -> Vec<Candidate> {
    let cells = layout.rows * layout.cols;
    let stride = 5 + layout.classes;
    assert_eq!(raw.len(), layout.anchors.len() * stride * cells, "head size must match its layout");
    let (input_w, input_h) = (layout.input.0 as f32, layout.input.1 as f32);
    let mut out = Vec::new();
    for (a, &(anchor_w, anchor_h)) in layout.anchors.iter().enumerate() {
        let channel = |k: usize| &raw[(a * stride + k) * cells..(a * stride + k + 1) * cells];
        let objectness = channel(4);
        for (cell, &logit) in objectness.iter().enumerate() {
            let obj = sigmoid(logit);
            // score = obj·cls ≤ obj: skip the 80 class sigmoids for the ≈99 % of cells below.
            // A NaN objectness compares as `None` and is skipped too.
            if obj.partial_cmp(&threshold).is_none_or(|o| o.is_lt()) {
                continue;
            }
            let Some((class, score)) = best_class(|c| channel(5 + c)[cell], layout.classes, obj) else {
                continue;
            };
            if score < threshold {
                continue;
            }
            let (row, col) = (cell / layout.cols, cell % layout.cols);
            let cx = (col as f32 + sigmoid(channel(0)[cell])) / layout.cols as f32 * input_w;
            let cy = (row as f32 + sigmoid(channel(1)[cell])) / layout.rows as f32 * input_h;
            let w = channel(2)[cell].exp() * anchor_w;
            let h = channel(3)[cell].exp() * anchor_h;
            let bbox = BoxF { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 };
            if bbox.is_finite() {
                out.push(Candidate { class, score, bbox });
            }
        }
    }
    out
}

/// The class with the highest `obj · σ(logit)`; NaN logits never win.
fn best_class(logit: impl Fn(usize) -> f32, classes: usize, obj: f32) -> Option<(usize, f32)> {
    (0..classes)
        .map(|c| (c, obj * sigmoid(logit(c))))
        .filter(|(_, s)| s.is_finite())
        .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// Intersection over union; 0 for degenerate boxes.
pub fn iou(a: &BoxF, b: &BoxF) -> f32 {
    let inter = BoxF { x1: a.x1.max(b.x1), y1: a.y1.max(b.y1), x2: a.x2.min(b.x2), y2: a.y2.min(b.y2) }.area();
    let union = a.area() + b.area() - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy per-class NMS: highest score first; a box is dropped when its IoU with a kept box of
/// the same class is above `iou_threshold` (0.45 by default, as `cv2.dnn.NMSBoxesBatched`).
/// Returns the kept boxes sorted by score, highest first.
pub fn non_max_suppression(mut candidates: Vec<Candidate>, iou_threshold: f32) -> Vec<Candidate> {
    candidates.retain(|c| c.score.is_finite() && c.bbox.is_finite());
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len());
    for candidate in candidates {
        let overlaps = kept.iter().any(|k| k.class == candidate.class && iou(&k.bbox, &candidate.bbox) > iou_threshold);
        if !overlaps {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cand(class: usize, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Candidate {
        Candidate { class, score, bbox: BoxF { x1, y1, x2, y2 } }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BoxF { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &BoxF { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 }), 50.0 / 150.0);
        assert_eq!(iou(&a, &BoxF { x1: 20.0, y1: 20.0, x2: 30.0, y2: 30.0 }), 0.0);
        let empty = BoxF { x1: 3.0, y1: 3.0, x2: 3.0, y2: 3.0 };
        assert_eq!(iou(&empty, &empty), 0.0);
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let boxes = vec![
            cand(0, 0.6, 0.0, 0.0, 10.0, 10.0),
            cand(0, 0.9, 1.0, 0.0, 11.0, 10.0), // IoU 0.82 with the first: suppresses it
            cand(1, 0.5, 0.0, 0.0, 10.0, 10.0), // another class: kept
            cand(0, 0.4, 30.0, 30.0, 40.0, 40.0),
        ];
        let kept = non_max_suppression(boxes, 0.45);
        let scores: Vec<f32> = kept.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4]);
    }

    #[test]
    fn nms_keeps_boxes_at_exactly_the_threshold() {
        // IoU exactly 1/3 with threshold 1/3: suppression needs IoU *above* the threshold.
        let boxes = vec![cand(0, 0.9, 0.0, 0.0, 10.0, 10.0), cand(0, 0.8, 5.0, 0.0, 15.0, 10.0)];
        assert_eq!(non_max_suppression(boxes, 50.0 / 150.0).len(), 2);
    }

    #[test]
    fn nan_scores_and_boxes_are_dropped_not_panicked_on() {
        let boxes = vec![
            cand(0, f32::NAN, 0.0, 0.0, 10.0, 10.0),
            cand(0, 0.7, f32::NAN, 0.0, 10.0, 10.0),
            cand(0, 0.5, 0.0, 0.0, 10.0, 10.0),
            cand(0, f32::INFINITY, 0.0, 0.0, 10.0, 10.0),
        ];
        let kept = non_max_suppression(boxes, 0.45);
        assert_eq!(kept, vec![cand(0, 0.5, 0.0, 0.0, 10.0, 10.0)]);
    }

    /// A 1-anchor, 2-class, 2×2 head with everything "off" (logit −20) except what the test sets.
    fn head(set: &[(usize, usize, f32)]) -> Vec<f32> {
        let mut raw = vec![-20.0; 7 * 4];
        for &(k, cell, v) in set {
            raw[k * 4 + cell] = v;
        }
        raw
    }

    const LAYOUT: HeadLayout =
        HeadLayout { rows: 2, cols: 2, anchors: &[(100.0, 50.0)], classes: 2, input: (416, 416) };

    #[test]
    fn decodes_centre_size_and_class() {
        // Cell 3 = row 1, col 1. tx = ty = 0 → centre offset 0.5; tw = th = 0 → anchor size.
        let raw = head(&[(0, 3, 0.0), (1, 3, 0.0), (2, 3, 0.0), (3, 3, 0.0), (4, 3, 20.0), (6, 3, 20.0)]);
        let found = decode_head(&raw, LAYOUT, 0.25);
        assert_eq!(found.len(), 1);
        let c = found[0];
        assert_eq!(c.class, 1);
        assert!((c.score - 1.0).abs() < 1e-6);
        // centre (1.5/2·416, 1.5/2·416) = (312, 312); size 100×50.
        assert_eq!(c.bbox, BoxF { x1: 262.0, y1: 287.0, x2: 362.0, y2: 337.0 });
    }

    #[test]
    fn score_is_objectness_times_class_probability() {
        // obj = σ(0) = 0.5, cls = σ(0) = 0.5 → 0.25: kept at 0.25, dropped at 0.26.
        let raw = head(&[(4, 0, 0.0), (5, 0, 0.0)]);
        assert_eq!(decode_head(&raw, LAYOUT, 0.25).len(), 1);
        assert!(decode_head(&raw, LAYOUT, 0.26).is_empty());
    }

    #[test]
    fn nan_logits_do_not_panic() {
        let raw = head(&[
            (4, 0, 5.0),
            (5, 0, f32::NAN),
            (6, 0, 5.0),
            (4, 1, f32::NAN),
            (4, 2, 5.0),
            (5, 2, 5.0),
            (2, 2, f32::NAN),
        ]);
        let found = decode_head(&raw, LAYOUT, 0.25);
        assert_eq!(found.len(), 1, "cell 0 keeps its finite class; cell 1 (NaN obj) and cell 2 (NaN box) go");
        assert_eq!(found[0].class, 1);
    }

    proptest! {
        #[test]
        fn nms_output_is_sorted_and_pairwise_separated(
            raw in proptest::collection::vec((0usize..3, 0.0f32..1.0, 0.0f32..100.0, 0.0f32..100.0, 1.0f32..50.0, 1.0f32..50.0), 0..40)
        ) {
            let boxes: Vec<Candidate> = raw.iter().map(|&(c, s, x, y, w, h)| cand(c, s, x, y, x + w, y + h)).collect();
            let kept = non_max_suppression(boxes.clone(), 0.45);
            prop_assert!(kept.len() <= boxes.len());
            prop_assert!(kept.windows(2).all(|w| w[0].score >= w[1].score));
            for (i, a) in kept.iter().enumerate() {
                for b in &kept[i + 1..] {
                    prop_assert!(a.class != b.class || iou(&a.bbox, &b.bbox) <= 0.45);
                }
            }
            // The best box of each class always survives.
            for class in 0..3 {
                let best = boxes.iter().filter(|b| b.class == class).map(|b| b.score).fold(f32::MIN, f32::max);
                if best > f32::MIN {
                    prop_assert!(kept.iter().any(|k| k.class == class && k.score == best));
                }
            }
        }
    }
}
