# Pretrained foundation models (config `models`) fetched into resources/models/<id>/ through their services'
# libraries: a public Google Drive folder with gdown, a Hugging Face repository at a pinned commit with
# huggingface_hub. Every file is verified (sha256 pinned in the config, else recorded in the download manifest at
# the first download and checked later). The methods that name a model (`model:`) take its folder as an input and
# get the paths its `params` name. A folder put there by hand is used as is.


rule fetch_model:
    output:
        directory(f"{wf.MODELS_DIR}/{{model}}"),
    log:
        "logs/models/{model}.log",
    params:
        spec=lambda w: config["models"][w.model],
        settings=config["download"],
    retries: 1
    localrule: True
    conda:
        "../workflow/envs/data.yaml"
    script:
        "../workflow/scripts/models/fetch.py"
