"""Segmentation templates: common patterns as drafts of policy files, parameterised by labels.

`microseg template list | show NAME | apply NAME --set app=crm --set env=prod` (microseg.cli.template)
reads them through `catalog`. Each template is a YAML file in this package: its parameters (checked
by `parameters`), the priority band it uses, and policy-file documents with `${...}` placeholders
that `expand` fills in the parsed data, never in YAML text. What comes out is loaded by the real
policy-file loader before anyone sees it. Described for users in docs/templates.md.

Imports the model and policy files only: no engine, server or CLI.
"""
