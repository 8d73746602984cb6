"""Mandarin text normalisation, tokenisation and character error rate (CER).

Tokens follow wenet's ``compute-wer.py --char=1``: every CJK character (Unicode category ``Lo``)
is one token, and every run of Latin letters / digits is one token ("iphone", "13"). CER is
the token-level edit distance divided by the number of reference tokens.

Normalisation (``normalize_zh``), applied until it reaches a fixed point so it is idempotent:
NFKC (full-width -> half-width, compatibility forms), lower-case, drop every punctuation (P*),
symbol (S*: ``～``, emoji, ...), separator and control character, optional traditional ->
simplified. Departures from wenet, on purpose:
- wenet keeps punctuation glued inside an ASCII run ("3.14", "don't"); here an apostrophe, period,
  hyphen or underscore between two word characters (or a comma between two digits) is dropped
  without splitting ("314", "dont", "1000"); any other punctuation splits tokens.
- Empty reference: CER is 0.0 when the hypothesis is empty too, else 1.0 (never divides by zero).

``scoring="wenet"`` (``cer``/``align``) instead reproduces wenet's ``tools/compute-cer.py --char=1``
(its default ``--cs=0``, tags removed) token for token, for numbers comparable with papers scored by it;
see ``wenet_tokens`` for its rules (no NFKC, only its 17 punctuation marks dropped, Latin words and
numbers split into characters). Its edit counts follow compute-cer.py's alignment tie-breaks.

Traditional -> simplified uses ``opencc`` (opencc-python-reimplemented) when importable; otherwise
a small explicit table of ~300 common characters (``_T2S_TABLE``), so rarer traditional
characters stay unchanged in that case.
"""
from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import jiwer

Op = Literal["equal", "sub", "del", "ins"]
Scoring = Literal["avcot", "wenet"]
"""Tokenisation + alignment of a CER: this module's normalised tokens, or wenet compute-cer.py's."""
SCORINGS: tuple[Scoring, ...] = ("avcot", "wenet")

# Common traditional -> simplified pairs (same position in both strings). Used only when opencc is
# not installed; a fallback, not a full converter.
_T2S_TRAD = (
    "這們個來時說對會國過還後裡為學長開問動見現發經關點東車門馬書話語讀寫買賣錢聽電腦機場"
    "飛東風雲氣號聲樂歡難愛認識記憶議論詞課試驗師員視網頁際華區體業務產廠鐵銀運輸導實際應"
    "該當頭類極衛環顯兩種灣億萬與從歲歷羅總結給紅綠藍線級約紙細終經統組織絕續維結練縣鄉鎮"
    "農醫藥幫帶將屬麼麗漢灣戰觀覺親記許設證評譯讓調變貝負貨質費貴買賣賽趕躍輕較輛轉辦邊遠"
    "遲選遺鄰鐘錄鏡長間閱陽陰陳陸隊隨險雙雞離雜難電靜響頂項順須領頻題顏願類風飯飲館驚驗髮"
    "鬥魚鳥鳴麥黃齊齒龍龜劉劇勞勢區協單賣衛廣應廳慶憂懷戲戶擔擁據擇擊撲擴攝敵數斷舊時晉暫"
    "曆條來東極構標樣樹橋機權歐歸殺氣決沒況淚淨減測湯溫滅滿漁潔澤濕災為無熱燈營爐爭爺牆獎"
    "獨獲現瑪產畫異當瘋癢發盡盤眾睜礦碼確禮禱禪種積穩窮競筆節範築簡簽籃糧糾紀紛紡純紙級"
    "紹終組結絡給絲綁經綜綠網緊編緩練縮總織繼續纜罰羅義習聖聞聯聰職肅腦膠臉臨舉艙艦藝蘋蘭"
    "蟲補裝複襪見規視覽親觀觸計訂訓託記訪設許訴診詢試詩話誌認誤說誰課調談請諸謝謠講證識譜"
    "護讀變讓豐豬貓貝負財貢貧貨販貪責貴費貼貿賀資賓賜賞賠賢賤賬賭賴贊贏趙趨跡踐蹤躍軍軟載"
    "輔輝輪輸辭農運過達違遙遞適選遷遺郵鄭醜釋錯鍵鍋鎖鎮鏈閃閉閒閣闆關闖阿陣陳隻雖雲電霧靈"
)
_T2S_SIMP = (
    "这们个来时说对会国过还后里为学长开问动见现发经关点东车门马书话语读写买卖钱听电脑机场"
    "飞东风云气号声乐欢难爱认识记忆议论词课试验师员视网页际华区体业务产厂铁银运输导实际应"
    "该当头类极卫环显两种湾亿万与从岁历罗总结给红绿蓝线级约纸细终经统组织绝续维结练县乡镇"
    "农医药帮带将属么丽汉湾战观觉亲记许设证评译让调变贝负货质费贵买卖赛赶跃轻较辆转办边远"
    "迟选遗邻钟录镜长间阅阳阴陈陆队随险双鸡离杂难电静响顶项顺须领频题颜愿类风饭饮馆惊验发"
    "斗鱼鸟鸣麦黄齐齿龙龟刘剧劳势区协单卖卫广应厅庆忧怀戏户担拥据择击扑扩摄敌数断旧时晋暂"
    "历条来东极构标样树桥机权欧归杀气决没况泪净减测汤温灭满渔洁泽湿灾为无热灯营炉争爷墙奖"
    "独获现玛产画异当疯痒发尽盘众睁矿码确礼祷禅种积稳穷竞笔节范筑简签篮粮纠纪纷纺纯纸级"
    "绍终组结络给丝绑经综绿网紧编缓练缩总织继续缆罚罗义习圣闻联聪职肃脑胶脸临举舱舰艺苹兰"
    "虫补装复袜见规视览亲观触计订训托记访设许诉诊询试诗话志认误说谁课调谈请诸谢谣讲证识谱"
    "护读变让丰猪猫贝负财贡贫货贩贪责贵费贴贸贺资宾赐赏赔贤贱账赌赖赞赢赵趋迹践踪跃军软载"
    "辅辉轮输辞农运过达违遥递适选迁遗邮郑丑释错键锅锁镇链闪闭闲阁板关闯阿阵陈只虽云电雾灵"
)
# Punctuation dropped without splitting when it sits between two word characters (',' only in numbers).
_WORD_JOINERS = frozenset("'’.-_")
_T2S_TABLE = {ord(t): s for t, s in zip(_T2S_TRAD, _T2S_SIMP, strict=True) if t != s}


@dataclass(frozen=True)
class CerResult:
    """Token-level edit counts for one pair (or a whole corpus) of reference / hypothesis."""

    errors: int
    """substitutions + deletions + insertions."""
    ref_len: int
    """Number of reference tokens."""
    substitutions: int
    deletions: int
    insertions: int
    hits: int

    @property
    def cer(self) -> float:
        """errors / ref_len; an empty reference gives 0.0 (empty hypothesis) or 1.0."""
        if self.ref_len == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.ref_len


@functools.cache
def _opencc_t2s() -> Callable[[str], str] | None:
    """Return opencc's t2s converter when the package is importable, else None."""
    try:
        from opencc import OpenCC  # type: ignore[import-not-found]
    except ImportError:
        return None
    return OpenCC("t2s").convert


def to_simplified(s: str) -> str:
    """Traditional -> simplified Chinese (opencc when installed, else the built-in table)."""
    convert = _opencc_t2s()
    return convert(s) if convert is not None else s.translate(_T2S_TABLE)


def is_cjk(ch: str) -> bool:
    """One-token-per-character scripts: Unicode 'Lo' (Han, kana, Hangul, Thai ...), as wenet."""
    return unicodedata.category(ch) == "Lo"


def _is_word_char(ch: str) -> bool:
    """Letters (other than Lo), digits/numbers and combining marks make up word tokens."""
    cat = unicodedata.category(ch)
    return cat[0] in "LNM" and cat != "Lo"


def _joins_word(s: str, i: int, word: list[str]) -> bool:
    """True when punctuation s[i] sits inside a word ("don't", "3.14", "e-mail", "1,000") and is dropped."""
    ch = s[i]
    if not word or i + 1 >= len(s) or not _is_word_char(s[i + 1]):
        return False
    if ch == ",":
        return word[-1].isdigit() and s[i + 1].isdigit()
    return ch in _WORD_JOINERS


def _tokens_once(s: str) -> list[str]:
    """One pass of fold + tokenise; see the module docstring for the rules."""
    s = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", s).lower())
    tokens: list[str] = []
    word: list[str] = []
    for i, ch in enumerate(s):
        if _is_word_char(ch):
            word.append(ch)
            continue
        if _joins_word(s, i, word):
            continue
        if word:
            tokens.append("".join(word))
            word = []
        if is_cjk(ch):
            tokens.append(ch)
    if word:
        tokens.append("".join(word))
    return tokens


def join_tokens(tokens: Sequence[str]) -> str:
    """Join tokens so that re-tokenising gives them back: space only between two word tokens."""
    out: list[str] = []
    prev_word = False
    for tok in tokens:
        is_word = not is_cjk(tok[0])
        if out and is_word and prev_word:
            out.append(" ")
        out.append(tok)
        prev_word = is_word
    return "".join(out)


def tokenize_zh(s: str, *, t2s: bool = False) -> list[str]:
    """Normalised tokens of `s`: one per CJK character, one per Latin word / number."""
    if not isinstance(s, str):
        raise TypeError(f"tokenize_zh expects str, got {type(s).__name__}")
    if t2s:
        s = to_simplified(s)
    tokens = _tokens_once(s)
    # NFKC can compose across removed punctuation (e + '.' + U+0301); iterate to a fixed point.
    for _ in range(4):
        joined = join_tokens(tokens)
        if unicodedata.is_normalized("NFKC", joined) and joined.lower() == joined:
            break  # folding is the identity here, so re-tokenising gives the same tokens
        again = _tokens_once(joined)
        if again == tokens:
            break
        tokens = again
    return tokens


def normalize_zh(s: str, *, t2s: bool = False) -> str:
    """Strip punctuation/symbols/whitespace, fold width and case, optionally convert to simplified.

    CJK characters are concatenated; consecutive Latin/digit tokens keep one space between them
    ("我用 iPhone，13 拍的！" -> "我用iphone 13拍的"). Idempotent.
    """
    return join_tokens(tokenize_zh(s, t2s=t2s))


# ------------------------------------------------------------------ wenet compute-cer.py scoring

WENET_PUNCTS = frozenset("!,?、。！，；？：「」︰『』《》")
"""The 17 marks compute-cer.py drops; any other punctuation (（）“”.-…) is kept as (part of) a token."""
_WENET_SPACES = frozenset(" \t\r\n")


def _wenet_chunks(s: str) -> list[str]:
    """compute-cer.py's ``characterize`` (``--char=1``): split a line into raw chunks.

    Skipped where a chunk would start: the 17 `WENET_PUNCTS`, space/tab/CR/LF, separators (Zs) and
    unassigned code points (Cn). A Lo character (Han, kana, Hangul ...) is a chunk of its own. Any
    other character starts a chunk that runs on over ASCII characters and ends before whitespace, a
    non-ASCII character, or a space; a chunk starting at '<' also ends after its '>' ("<unk><noise>").
    So "（" "é" "Ａ" are one-character chunks, "3.14" "don't" "hello,world" "abc<unk>" one chunk each.
    """
    chunks: list[str] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        category = unicodedata.category(ch)
        if ch in WENET_PUNCTS or ch in _WENET_SPACES or category in ("Zs", "Cn"):
            i += 1
            continue
        if category == "Lo":
            chunks.append(ch)
            i += 1
            continue
        end_at = ">" if ch == "<" else " "
        j = i + 1
        while j < n and ord(s[j]) < 128 and s[j] not in _WENET_SPACES and s[j] != end_at:
            j += 1
        if j < n and s[j] == ">":
            j += 1  # the tag's closing bracket belongs to it
        chunks.append(s[i:j])
        i = j
    return chunks


def _strip_tags(x: str) -> str:
    """Drop every '<...>' span; an unclosed '<' drops the rest (compute-cer.py's ``stripoff_tags``)."""
    out: list[str] = []
    inside = False
    for ch in x:
        if inside:
            inside = ch != ">"
        elif ch == "<":
            inside = True
        else:
            out.append(ch)
    return "".join(out)


def wenet_tokens(s: str, *, case_sensitive: bool = False, tochar: bool = True, remove_tags: bool = True,
                 t2s: bool = False) -> list[str]:
    """Tokens of one transcript exactly as wenet's ``tools/compute-cer.py`` scores them.

    Chunks come from `_wenet_chunks` (``--char=1``, the default here) or from whitespace
    (``tochar=False``, ``--char=0``). Each chunk is then upper-cased unless `case_sensitive`
    (``--cs=1``), has its '<...>' tags removed (``--rt``, on by default), is dropped when nothing is
    left, and is split into single characters when it is all letters/digits (``str.isalnum``), so
    "iPhone13" scores as 8 tokens "I" "P" ... "3"; a chunk holding any other character ("3.14", "（")
    stays one token. No width or NFKC folding: "ａ" and "a" differ. ``--ig``/``--splitfile`` are not
    supported. `t2s` converts traditional -> simplified first (not a compute-cer.py option).
    """
    if not isinstance(s, str):
        raise TypeError(f"wenet_tokens expects str, got {type(s).__name__}")
    if t2s:
        s = to_simplified(s)
    tokens: list[str] = []
    for chunk in _wenet_chunks(s) if tochar else s.split():
        x = chunk if case_sensitive else chunk.upper()
        if remove_tags:
            x = _strip_tags(x)
        if not x:
            continue
        tokens.extend(x if x.isalnum() else [x])
    return tokens


def wenet_align_tokens(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[str, str, Op]]:
    """Levenshtein alignment with compute-cer.py's tie-breaks: deletion, then insertion, then diagonal.

    Each cell keeps the first of (del, ins, sub/equal) that reaches its minimum, and the trace-back
    follows those choices, so S/D/I (not only their sum) match compute-cer.py's counts.
    """
    n, m = len(ref), len(hyp)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    move: list[list[Op | None]] = [[None] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        dist[i][0], move[i][0] = i, "del"
    for j in range(1, m + 1):
        dist[0][j], move[0][j] = j, "ins"
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            best, op = dist[i - 1][j] + 1, "del"
            if dist[i][j - 1] + 1 < best:
                best, op = dist[i][j - 1] + 1, "ins"
            same = ref[i - 1] == hyp[j - 1]
            if dist[i - 1][j - 1] + (not same) < best:
                best, op = dist[i - 1][j - 1] + (not same), "equal" if same else "sub"
            dist[i][j], move[i][j] = best, op
    rows: list[tuple[str, str, Op]] = []
    i, j = n, m
    while move[i][j] is not None:
        op = move[i][j]
        rows.append((ref[i - 1] if op != "ins" else "", hyp[j - 1] if op != "del" else "", op))
        i, j = i - (op != "ins"), j - (op != "del")
    return rows[::-1]


def scored_tokens(s: str, *, scoring: Scoring = "avcot", t2s: bool = False) -> list[str]:
    """Tokens a CER counts under `scoring`: `tokenize_zh` ("avcot") or `wenet_tokens` ("wenet")."""
    if scoring == "avcot":
        return tokenize_zh(s, t2s=t2s)
    if scoring == "wenet":
        return wenet_tokens(s, t2s=t2s)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


# ------------------------------------------------------------------ alignment and CER


def _ops(ref_tokens: list[str], hyp_tokens: list[str]) -> list[tuple[str, str, Op]]:
    """Token alignment via jiwer, expanded to one (ref, hyp, op) row per token (jiwer 4 aligns an empty side
    as all deletions / insertions, so no special case)."""
    out = jiwer.process_words(" ".join(ref_tokens), " ".join(hyp_tokens))
    rows: list[tuple[str, str, Op]] = []
    for chunk in out.alignments[0]:
        refs = ref_tokens[chunk.ref_start_idx : chunk.ref_end_idx]
        hyps = hyp_tokens[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            rows.extend((r, h, "equal") for r, h in zip(refs, hyps, strict=True))
        elif chunk.type == "substitute":
            rows.extend((r, h, "sub") for r, h in zip(refs, hyps, strict=True))
        elif chunk.type == "delete":
            rows.extend((r, "", "del") for r in refs)
        else:
            rows.extend(("", h, "ins") for h in hyps)
    return rows


def align_tokens(ref_tokens: Sequence[str], hyp_tokens: Sequence[str]) -> list[tuple[str, str, Op]]:
    """Align two token lists; ops are equal/sub/del/ins ('' stands for the missing side)."""
    return _ops(list(ref_tokens), list(hyp_tokens))


def _aligned(ref: str, hyp: str, scoring: Scoring, t2s: bool) -> tuple[list[tuple[str, str, Op]], int]:
    ref_tokens, hyp_tokens = scored_tokens(ref, scoring=scoring, t2s=t2s), scored_tokens(hyp, scoring=scoring, t2s=t2s)
    if scoring == "wenet":
        return wenet_align_tokens(ref_tokens, hyp_tokens), len(ref_tokens)
    return _ops(ref_tokens, hyp_tokens), len(ref_tokens)


def align(ref: str, hyp: str, *, t2s: bool = False, scoring: Scoring = "avcot") -> list[tuple[str, str, Op]]:
    """Aligned (ref_token, hyp_token, op) rows of the normalised texts, for reports."""
    return _aligned(ref, hyp, scoring, t2s)[0]


def _count(rows: list[tuple[str, str, Op]], ref_len: int) -> CerResult:
    """Summarise alignment rows into a CerResult."""
    n = {"equal": 0, "sub": 0, "del": 0, "ins": 0}
    for _, _, op in rows:
        n[op] += 1
    return CerResult(
        errors=n["sub"] + n["del"] + n["ins"],
        ref_len=ref_len,
        substitutions=n["sub"],
        deletions=n["del"],
        insertions=n["ins"],
        hits=n["equal"],
    )


def cer(ref: str, hyp: str, *, t2s: bool = False, scoring: Scoring = "avcot") -> CerResult:
    """CER of one hypothesis against one reference, on `scoring`'s tokens (``.cer`` for the rate)."""
    return _count(*_aligned(ref, hyp, scoring, t2s))


def corpus_cer(refs: Sequence[str], hyps: Sequence[str], *, t2s: bool = False) -> CerResult:
    """Corpus CER: total errors over total reference tokens (not a mean of per-row rates)."""
    if len(refs) != len(hyps):
        raise ValueError(f"corpus_cer: {len(refs)} references but {len(hyps)} hypotheses")
    parts = [cer(r, h, t2s=t2s) for r, h in zip(refs, hyps, strict=True)]
    return CerResult(
        errors=sum(p.errors for p in parts),
        ref_len=sum(p.ref_len for p in parts),
        substitutions=sum(p.substitutions for p in parts),
        deletions=sum(p.deletions for p in parts),
        insertions=sum(p.insertions for p in parts),
        hits=sum(p.hits for p in parts),
    )
