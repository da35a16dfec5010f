# The template's maintainers' targets, included by the Makefile in the template repository
# alone (Copier leaves tests/template/ out of every project).
.PHONY: template

template: install-dev ## (template maintainers) render the default answers with copier; rewrite each twin's plain file (Makefile, README.md, conf/config.yaml)
	$(BIN)/python tests/template/render.py
