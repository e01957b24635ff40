"""The categorical palettes (issue #30, "a colour-blind-safe option"): the default's twenty colours are all
distinct to the eye, the safe option's ten stay apart under every simulated colour-vision deficiency, and a
person's choice (a cookie) is what the server draws with, from the button in a real browser.

The reference is computed here: sRGB to CIELAB (D65), with dichromacy simulated by Machado, Oliveira and
Fernandes' (2009) matrices at full severity, applied in linear RGB."""
import itertools

import numpy as np
import pytest

from dashboard.views import theme

MACHADO = {  # linear-RGB matrices, severity 1.0 (Machado et al. 2009, table of the paper's supplement)
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]],
}


def linear_rgb(hex_colours: list[str]) -> np.ndarray:
    c = np.array([[int(h[i:i + 2], 16) for i in (1, 3, 5)] for h in hex_colours]) / 255
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def cielab(lin: np.ndarray) -> np.ndarray:
    xyz = lin @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


def closest_pair(hex_colours: list[str], vision=np.eye(3)) -> tuple[float, str, str]:
    lab = cielab(np.clip(linear_rgb(hex_colours) @ np.asarray(vision).T, 0, 1))
    return min((float(np.linalg.norm(lab[i] - lab[j])), hex_colours[i], hex_colours[j])
               for i, j in itertools.combinations(range(len(hex_colours)), 2))


def test_the_default_palettes_twenty_colours_are_distinct_to_the_eye():
    assert len(theme.PALETTE) == len(set(theme.PALETTE)) == 20
    distance, a, b = closest_pair(theme.PALETTE)
    assert distance >= 15, f"{a} and {b} are only {distance:.1f} CIELAB units apart"


@pytest.mark.parametrize("vision", ["normal", *MACHADO])
def test_the_safe_palettes_ten_colours_stay_apart_in_every_colour_vision(vision):
    matrix = np.eye(3) if vision == "normal" else MACHADO[vision]
    distance, a, b = closest_pair(theme.SAFE_PALETTE, matrix)
    assert len(theme.SAFE_PALETTE) == 10
    assert distance >= 14, f"under {vision}, {a} and {b} are only {distance:.1f} CIELAB units apart"


def test_the_default_palette_fails_that_test_past_its_first_colours():
    """The check above can fail: the default's twenty do not all stay apart under deuteranopia."""
    assert closest_pair(theme.PALETTE, MACHADO["deuteranopia"])[0] < 14


def test_the_cookie_picks_the_palette_and_template_a_figure_is_drawn_with():
    from dashboard.app import server
    ids = [f"run{i}" for i in range(12)]
    with server.test_request_context(headers={"Cookie": f"{theme.PALETTE_COOKIE}=safe"}):
        assert set(theme.run_colors(ids).values()) <= set(theme.SAFE_PALETTE)
        assert list(theme.empty_figure("x").layout.template.layout.colorway) == theme.SAFE_PALETTE
    with server.test_request_context():
        assert list(theme.run_colors(ids).values()) == theme.PALETTE[:12]
        assert list(theme.empty_figure("x").layout.template.layout.colorway) == theme.PALETTE
    assert theme.palette() == theme.PALETTE  # outside a request (a script, a benchmark): the default


@pytest.mark.browser
def test_the_palette_button_redraws_the_compare_page_in_the_safe_colours_and_remembers(page, dashboard_url,
                                                                                         trained_store):
    ids = trained_store.run_ids
    url = f"{dashboard_url}/compare?runs={ids['sigmoid']},{ids['sigmoid_b']},{ids['relu']}"
    colorway = "() => document.querySelector('#compare-curve-test_acc .js-plotly-plot').layout.template.layout.colorway"
    page.goto(url)
    page.wait_for_selector("#compare-curve-test_acc .main-svg", timeout=30000)
    button = page.locator("#app-palette-toggle")
    assert button.get_attribute("aria-pressed") == "false"
    assert page.evaluate(colorway) == theme.PALETTE
    with page.expect_navigation():
        button.click()
    page.wait_for_selector("#compare-curve-test_acc .main-svg", timeout=30000)
    assert page.evaluate(colorway) == theme.SAFE_PALETTE
    assert button.get_attribute("aria-pressed") == "true"
    page.goto(url)  # remembered on the next visit
    page.wait_for_selector("#compare-curve-test_acc .main-svg", timeout=30000)
    assert page.evaluate(colorway) == theme.SAFE_PALETTE
