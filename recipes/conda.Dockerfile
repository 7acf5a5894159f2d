# kiln recipe v{{ r.format_version }}: a conda environment in /opt/conda on {{ r.base_image }}.
# Build context: this file and conda.yml (`kiln recipe --conda-env ...`).
FROM {{ r.micromamba_image }} AS solve
COPY conda.yml /tmp/conda.yml
RUN micromamba install --yes --root-prefix /opt/conda --name base --file /tmp/conda.yml \
    && micromamba clean --all --yes \
    && micromamba env export --root-prefix /opt/conda --name base --explicit > /tmp/conda.lock \
    && echo ">> CONDA_LOCK_START" && cat /tmp/conda.lock && echo "<< CONDA_LOCK_END"

FROM {{ r.base_image }}
COPY --from=solve /opt/conda /opt/conda
ENV MAMBA_ROOT_PREFIX=/opt/conda \
    PATH=/opt/conda/bin:$PATH
