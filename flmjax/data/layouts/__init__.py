"""Stream layouts of FLM-Audio's training stages (training.md section 2, the papers' Figure 3).

A layout turns already-tokenised material (text token ids, Mimi codes int32 [8, F] at 12.5 Hz) into a
`Sample`: tokens int32 [T, 17] in raw coordinates (stream order text, speak cb0..7, listen cb0..7; the
pipeline applies `delay_sample` afterwards), loss weights float32 [T, 17] and the segments it placed.

Conventions every layout follows:
- Frame 0 is the decoder's initial frame: text `<wait>`, speak `aud_pad`, zero weight. Its listen codes
  are the listen channel's fill (what the user sends while the decoder starts).
- Text: token runs where a layout places them, `<wait>` everywhere else; every text position of the
  content carries weight (the loss tells monologue from `<wait>` by the token).
- Speak: weight on every non-empty token: speech codes, and in dialogs (SFT) the Mimi-encoded silence the
  model produces whenever it does not speak. Post-training leaves speak empty where no TTS speech lies.
- Listen: input only, never weighted.
- A channel a layout does not use, and every channel in a post-training gap, holds
  `ids.unused_audio_channel` (the papers' "empty token") with zero weight: a gap has no speech on either
  side, and the post-training pairs come without any encoded silence to put there.
- Padding frames after the content: text `<wait>`, audio `ids.unused_audio_channel`, zero weight.

Timings are frames (80 ms); seconds convert with `frames()` (rounded) or floor/ceil where stated.

Modules: `segments` (names, `Segment`, `Sample`), `config` (`LayoutConfig`), `checks` (input checks),
`render` (segments -> tokens and weights), `posttrain` (TTS/ASR pairs), `dialog` (fine-tuning dialogs).
"""

from flmjax.data.layouts.config import LayoutConfig
from flmjax.data.layouts.dialog import (
    DialogPlan,
    Turn,
    dialog_layout,
    layout_asr_response_tts,
    layout_response_tts,
    layout_response_tts_free,
    plan_dialog,
    render_dialog,
)
from flmjax.data.layouts.posttrain import (
    AlignedPair,
    WordTiming,
    assemble_post_training,
    layout_asr,
    layout_tts,
    layout_word_level,
)
from flmjax.data.layouts.render import delay_sample
from flmjax.data.layouts.segments import (
    DIALOG_LAYOUTS,
    SEGMENT_FIELDS,
    Channel,
    Layout,
    LayoutError,
    Sample,
    SampleTooLongError,
    Segment,
    SegmentKind,
    Style,
    TranscriptTooLongError,
    frames,
)

__all__ = [
    "DIALOG_LAYOUTS",
    "SEGMENT_FIELDS",
    "AlignedPair",
    "Channel",
    "DialogPlan",
    "Layout",
    "LayoutConfig",
    "LayoutError",
    "Sample",
    "SampleTooLongError",
    "Segment",
    "SegmentKind",
    "Style",
    "TranscriptTooLongError",
    "Turn",
    "WordTiming",
    "assemble_post_training",
    "delay_sample",
    "dialog_layout",
    "frames",
    "layout_asr",
    "layout_asr_response_tts",
    "layout_response_tts",
    "layout_response_tts_free",
    "layout_tts",
    "layout_word_level",
    "plan_dialog",
    "render_dialog",
]
