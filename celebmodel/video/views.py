"""What the Identify page shows of a video: the timeline (a row per person, a bar per
occurrence, plotly), the table of people with their screen time and best face, and the frame
at a moment with the faces on it boxed and named."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from PIL import Image

from ..reports.display import data_uri, draw_faces, short_of_certain
from .timeline import PRESET, VideoTimeline

KNOWN_COLOUR, UNKNOWN_COLOUR = "#2e7d32", "#ef6c00"  # as the boxes on photos


def clock(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss`` past an hour)."""
    minutes, rest = divmod(max(0.0, seconds), 60)
    if minutes >= 60:
        return f"{int(minutes // 60)}:{int(minutes % 60):02d}:{int(rest):02d}"
    return f"{int(minutes)}:{rest:04.1f}"


def preset_words(preset: str) -> str:
    """What the page says of the preset a video is named at."""
    if preset == PRESET:
        return (f"Balanced, above, is for photos: videos are named at {PRESET}, since a video "
                "shows many strangers' faces (an audience, passers-by), each a chance to name "
                "one wrongly. Lenient chosen above, or a threshold set by hand, applies to "
                "videos too.")
    return f"This video is named at {preset}, as chosen above."


def count(number: int, one: str, many: str) -> str:
    return f"{number:,} {one if number == 1 else many}"


def summary(timeline: VideoTimeline) -> str:
    """One line: who was found, in how much video, how fast."""
    known = sum(p.known for p in timeline.people)
    length = timeline.info.duration or timeline.end
    return (
        f"{count(known, 'known person', 'known people')} and "
        f"{count(len(timeline.people) - known, 'unknown person', 'unknown people')} in "
        f"{clock(length)} of video ({count(timeline.frames, 'frame', 'frames')} looked at, "
        f"{count(timeline.faces, 'face', 'faces')}, "
        f"{count(len(timeline.tracks), 'track', 'tracks')}; {timeline.seconds:.1f} s)"
    )


def occurrence_frame(timeline: VideoTimeline) -> pd.DataFrame:
    rows = [
        {"person": p.name, "known": "known" if p.known else "unknown", "start": o["start"],
         "seconds": o["end"] - o["start"], "from": clock(o["start"]), "to": clock(o["end"]),
         "sure": "not known" if o["match_confidence"] is None
         else f"match confidence {short_of_certain(o['match_confidence'])}"}
        for p in timeline.people for o in p.occurrences
    ]
    return pd.DataFrame(rows, columns=["person", "known", "start", "seconds", "from", "to", "sure"])


def timeline_figure(timeline: VideoTimeline) -> go.Figure:
    """A row per person (known first, by screen time), a bar per occurrence; each bar carries
    its start time (``customdata``), so a click can start the video there."""
    frame = occurrence_frame(timeline)
    order = [p.name for p in timeline.people]
    figure = px.bar(
        frame, x="seconds", y="person", base="start", orientation="h", color="known",
        color_discrete_map={"known": KNOWN_COLOUR, "unknown": UNKNOWN_COLOUR},
        custom_data=["start", "from", "to", "sure"], category_orders={"person": order},
    )
    figure.update_traces(  # plain words, not plotly's "key=value" lines
        hovertemplate="<b>%{y}</b><br>%{customdata[1]} to %{customdata[2]}<br>"
                      "%{customdata[3]}<extra></extra>"
    )
    length = timeline.info.duration or timeline.end
    figure.update_layout(
        xaxis={"title": "seconds", "range": [0, length]}, yaxis={"title": None},
        height=120 + 32 * len(order), showlegend=False, margin={"l": 10, "r": 10, "t": 10},
        clickmode="event+select",
        hoverlabel={"bgcolor": "white", "font_size": 14, "font_color": "#262730",
                    "align": "left"},  # readable, not plotly's small grey
    )
    return figure


def people_table(timeline: VideoTimeline) -> pd.DataFrame:
    """A row per person: best face, name, screen time, appearances, how sure."""
    return pd.DataFrame([
        {"face": data_uri(p.best.thumbnail) if p.best.thumbnail else None, "person": p.name,
         "on screen": clock(p.screen_time), "appearances": len(p.occurrences),
         "first seen": clock(p.occurrences[0]["start"]),
         "match confidence": "" if p.match_confidence is None
         else short_of_certain(p.match_confidence)}
        for p in timeline.people
    ])


def frame_with_faces(pixels: Any, timeline: VideoTimeline, time: float) -> Image.Image:
    """The frame at ``time`` with its faces boxed and named."""
    return draw_faces(Image.fromarray(pixels), timeline.faces_at(time), numbered=False)
