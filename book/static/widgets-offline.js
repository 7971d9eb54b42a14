// Loaded before RequireJS and the ipywidgets HTML manager on pages with widgets (_config.yml,
// nb_ipywidgets_js), both vendored into _static/ (book/vendor, see the Makefile).
// 1. The manager's bundles load their fonts from the folder of the AMD module they run as, which
//    RequireJS places beside the page: point both at the vendored copy (a global `require` set
//    before require.js loads is its configuration). The bundled modules @jupyter-widgets/base,
//    controls, output... inject CSS whose fonts resolve against their own module path too, so
//    every @jupyter-widgets/* module maps into the same folder.
const htmlManagerDist = new URL("html-manager/dist", document.currentScript.src).href;
window.__jupyter_widgets_assets_path__ = `${htmlManagerDist}/`;
window.require = {
  paths: { "@jupyter-widgets/html-manager/dist": htmlManagerDist, "@jupyter-widgets": htmlManagerDist },
};

// 2. Widgets typeset their descriptions with MathJax 2's MathJax.Hub.Queue; the book has MathJax 3
//    (loaded only on pages with math). Translate the call once MathJax has started.
document.addEventListener("DOMContentLoaded", () => {
  const mathjax = window.MathJax;
  if (mathjax && mathjax.startup && !mathjax.Hub) {
    mathjax.Hub = {
      Queue: ([, , element]) => mathjax.startup.promise.then(() => mathjax.typesetPromise([element])),
    };
  }
});
