// Renders the formulas that pymdownx.arithmatex marks (class "arithmatex": \( \) inline, \[ \] displayed) with
// the KaTeX copy served from this site (assets/katex), so that the pages need no network.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    renderMathInElement(el, {
      delimiters: [{left: "\\[", right: "\\]", display: true}, {left: "\\(", right: "\\)", display: false}],
      throwOnError: false,
    });
  });
});
