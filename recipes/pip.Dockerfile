# kiln recipe v{{ r.format_version }}: pip packages on {{ r.base_image }}.
FROM {{ r.base_image }}
RUN PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
{%- for requirement in r.requirements %}
        "{{ requirement }}"{% if !loop.last %} \{% endif %}
{%- endfor %}
