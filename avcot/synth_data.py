"""Sentence tables for the synthetic Mandarin homophone clips (`avcot.synth`).

Each pair holds two words whose toneless pinyin is identical (most also share the tones, so the
audio alone cannot tell them apart); each word comes with a visual scene that decides it. Every
template has one `{w}` slot where either word of the pair is grammatical, so the spoken sentence
is ambiguous by sound and only the picture settles it — the CAVSR premise. `Variation` describes how
one rendering of a clip departs from the plain one (voice, layout, tint, font size); `SentenceSpec` is
everything needed to render one clip.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Scene:
    """What the picture shows when a word is the intended one."""

    sign: str
    """Background sign text containing the word (cue `background`)."""
    legend: str
    """Scene legend word that implies the word without spelling it (cue `scene`)."""
    colour: tuple[int, int, int]
    """Scene background colour (RGB)."""
    icon: str
    """Drawn icon: circle | square | triangle | diamond | bars | cross | waves | star."""


@dataclass(frozen=True)
class HomophonePair:
    """Two words with toneless-identical pinyin, their scenes and shared sentence templates."""

    key: str
    """Short ascii id used in sentence ids."""
    words: tuple[str, str]
    pinyin: tuple[str, str]
    """Tone-digit pinyin of each word (space separated syllables)."""
    scenes: tuple[Scene, Scene]
    templates: tuple[str, ...]
    """Sentences with one `{w}` slot where either word fits."""

    @property
    def same_tones(self) -> bool:
        """True when the two words are full homophones (tones included)."""
        return self.pinyin[0] == self.pinyin[1]


@dataclass(frozen=True)
class Variation:
    """How one rendering of a clip departs from the plain one (the identity by default)."""

    speed: int | None = None
    """espeak-ng words per minute; None = the generator's `speed`."""
    pitch: int = 50
    """espeak-ng pitch (0-99; 50 is espeak's default)."""
    dx: float = 0.0
    """Horizontal offset of the cue box and speaker, as a fraction of the frame width."""
    dy: float = 0.0
    """Vertical offset of the cue box and speaker, as a fraction of the frame height."""
    tint: tuple[int, int, int] = (0, 0, 0)
    """Added to the background colour (clipped to 0-255)."""
    font_scale: float = 1.0
    """Scales the starting font size of the cue text (it still shrinks to fit its box)."""


IDENTITY = Variation()


Voice = tuple[int, int]
"""(espeak-ng words per minute, pitch 0-99)."""


def random_variation(rng: random.Random, speed: int = 140, voices: tuple[Voice, ...] = ()) -> Variation:
    """A seeded rendering: box offsets ±6% across and ±4% down, tint ±20, font 0.8-1.0; voice = one of
    `voices`, or (with none given) any rate in speed±30 wpm and pitch in 30-70."""
    rate, pitch = rng.choice(voices) if voices else (rng.randint(speed - 30, speed + 30), rng.randint(30, 70))
    return Variation(speed=rate, pitch=pitch, dx=rng.uniform(-0.06, 0.06), dy=rng.uniform(-0.04, 0.04),
                     tint=tuple(rng.randint(-20, 20) for _ in range(3)), font_scale=rng.uniform(0.8, 1.0))


def _pair(key: str, a: str, pa: str, b: str, pb: str, sa: Scene, sb: Scene, *templates: str) -> HomophonePair:
    return HomophonePair(key, (a, b), (pa, pb), (sa, sb), tuple(templates))


PAIRS: tuple[HomophonePair, ...] = (
    _pair("shiyan", "实验", "shi2 yan4", "试验", "shi4 yan4",
          Scene("实验室", "化学课", (186, 220, 240), "circle"),
          Scene("试验场", "汽车厂", (200, 200, 150), "square"),
          "这次{w}的结果很重要", "我们明天继续做{w}"),
    _pair("qizhong", "期中", "qi1 zhong1", "期终", "qi1 zhong1",
          Scene("期中考试", "学期过半", (250, 230, 170), "triangle"),
          Scene("期终考试", "学年结束", (240, 190, 160), "diamond"),
          "{w}考试下周开始", "老师说{w}成绩已经出来了"),
    _pair("gongshi", "公式", "gong1 shi4", "公示", "gong1 shi4",
          Scene("数学公式", "数学课", (170, 200, 170), "cross"),
          Scene("公示栏", "公告栏", (220, 220, 230), "bars"),
          "请大家看一下这个{w}", "{w}已经写在墙上了"),
    _pair("quanli", "权利", "quan2 li4", "权力", "quan2 li4",
          Scene("公民权利", "法律课", (200, 180, 230), "star"),
          Scene("权力机关", "政府大楼", (180, 180, 180), "square"),
          "每个人都看重自己的{w}", "他们今天讨论了{w}的问题"),
    _pair("shumu", "树木", "shu4 mu4", "数目", "shu4 mu4",
          Scene("树木保护区", "森林", (120, 190, 120), "triangle"),
          Scene("数目核对", "银行柜台", (210, 210, 190), "bars"),
          "这里的{w}很多", "请再确认一下{w}"),
    _pair("gongyuan", "公园", "gong1 yuan2", "公元", "gong1 yuan2",
          Scene("人民公园", "草地", (150, 210, 130), "circle"),
          Scene("公元纪年", "博物馆", (200, 170, 130), "diamond"),
          "我们一起看{w}的介绍", "他在讲{w}前的故事"),
    _pair("shichang", "市场", "shi4 chang3", "试场", "shi4 chang3",
          Scene("农贸市场", "菜摊", (240, 200, 120), "waves"),
          Scene("考试试场", "考场", (190, 210, 230), "cross"),
          "明天早上我去{w}", "{w}里面人很多"),
    _pair("fayan", "发言", "fa1 yan2", "发炎", "fa1 yan2",
          Scene("发言席", "会议室", (170, 190, 220), "bars"),
          Scene("发炎处理", "医院", (235, 235, 245), "cross"),
          "他的{w}让大家很担心", "医生问起了{w}的事"),
    _pair("shoushi", "首饰", "shou3 shi4", "手势", "shou3 shi4",
          Scene("首饰店", "珠宝店", (230, 200, 220), "diamond"),
          Scene("手势教学", "手语课", (200, 230, 210), "star"),
          "她的{w}很漂亮", "请注意这个{w}"),
    _pair("yueju", "越剧", "yue4 ju4", "粤剧", "yue4 ju4",
          Scene("越剧院", "浙江", (160, 200, 200), "waves"),
          Scene("粤剧团", "广东", (230, 170, 150), "circle"),
          "今晚有一场{w}演出", "奶奶最喜欢听{w}"),
)


@dataclass(frozen=True)
class SentenceSpec:
    """Everything needed to render one clip."""

    id: str
    sentence_id: str
    """Template id (`<pair>-s<k>`), shared by both words of the pair: split train/test on it."""
    pair_key: str
    target: str
    """The homophone that is spoken (and that the picture supports, except for `conflict`)."""
    competitor: str
    text: str
    """Reference transcript = what is spoken."""
    pinyin: str
    cue: str
    scene: Scene
    """Scene of the target word."""
    screen_text: str
    """Text drawn on screen: sign, legend or subtitle (the competitor's sentence for `conflict`)."""
    variation: Variation = IDENTITY
